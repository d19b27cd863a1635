"""The tile-preparation job on Ray Data: plan cells on the driver, cut shards of cells on the cluster.

Layout under ``cfg.out``:

- ``manifest/part-NNNNN.parquet``: the manifest, one Parquet file per shard (shards whose
  cells were all rejected write none);
- ``tiles/<cell id>.tif``: the tiles as COGs when ``inline`` is false;
- ``rejects.csv``: (id, reason, detail) for every rejected street view and cell;
- ``summary.json``: counts (cells, tiles, observations kept, rejections by reason, bytes read);
- ``_plan.json``: a fingerprint of the inputs and the settings that shape the output;
- ``_shards/NNNNN.json``: one record per complete shard, written after its Parquet file.

A rerun with the same inputs and settings skips the shards that have a record: a crash
(or a killed driver) costs only the shards that were in flight. A rerun with other inputs
or settings stops with an error unless ``overwrite`` is set.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import posixpath
import signal
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray
from tqdm import tqdm

from gair.configs import to_dict
from gair.configs.prepare import PrepareConfig
from gair.data import schema, storage
from gair.prepare import grid, inputs, rangeio
from gair.prepare.cut import CutOptions, Reject, cut_cell, observation_dict

FAULT_ENV = "GAIR_FAULT_PREPARE_AFTER"  # kill the driver (SIGKILL) after this many shards (recovery tests)
# Settings that change what a shard writes: a rerun must agree on them to reuse finished shards.
_SHAPING = (
    "tile_size_m", "resolution_m", "min_obs", "bands", "resampling", "max_cloud_fraction", "max_nodata_fraction",
    "cloud_classes", "nodata_classes", "max_scenes_per_cell", "inline", "sv_inline", "cells_per_shard",
)  # fmt: skip


@dataclass
class Plan:
    """What the driver decided before any pixel is read."""

    street_views: int
    cells: int  # cells holding at least one street view
    shards: list[list[dict[str, Any]]]  # cells (JSON-able dicts) per shard
    scenes: dict[str, inputs.Scene]
    rejects: list[tuple[str, str, str]] = field(default_factory=list)
    cells_skipped: int = 0  # below min_obs
    fingerprint: str = ""


def s3_options(cfg: PrepareConfig) -> storage.S3Options:
    return storage.S3Options.from_config(cfg).resolved()


def load_scenes(cfg: PrepareConfig) -> list[inputs.Scene]:
    s3 = s3_options(cfg)
    scenes = inputs.scenes_from_stac(cfg.stac, s3) if cfg.stac else inputs.scenes_from_cogs(cfg.cogs, s3)
    if not scenes:
        raise ValueError(f"no Sentinel-2 scenes with band assets in {cfg.stac or cfg.cogs}")
    return scenes


def build_plan(cfg: PrepareConfig) -> Plan:
    """Read the street views and the scenes, group the street views into cells, split cells into shards."""
    s3 = s3_options(cfg)
    sv = inputs.read_street_views(cfg.street_views, cfg.columns, s3)
    scenes = load_scenes(cfg)
    rejects: list[tuple[str, str, str]] = []
    ll = sv.lonlat
    finite = np.isfinite(ll).all(axis=1)
    in_range = finite & (np.abs(ll[:, 0]) <= 180) & (np.abs(ll[:, 1]) <= 90)
    for i in np.flatnonzero(~in_range):
        reason = Reject.LONLAT_NAN if not finite[i] else Reject.LONLAT_OUT_OF_RANGE
        rejects.append((sv.ids[i], reason, f"lon, lat = {ll[i, 0]}, {ll[i, 1]}"))
    rows = np.flatnonzero(in_range)
    cells, uncovered = grid.assign_cells(ll[rows], scenes, cfg.tile_size_m)
    for i in uncovered:
        r = rows[i]
        rejects.append((sv.ids[r], Reject.NO_SCENE, f"lon, lat = {ll[r, 0]}, {ll[r, 1]} is in no scene's footprint"))
    kept, skipped = [], 0
    for cell in cells:
        members = [int(rows[i]) for i in cell.obs]
        if len(members) < cfg.min_obs:
            skipped += 1
            rejects.append((cell.cell_id, Reject.TOO_FEW_OBS, f"{len(members)} street view(s) < min_obs {cfg.min_obs}"))
            continue
        obs = [
            observation_dict(sv.ids[r], ll[r], sv.images[r], sv.capture_time[r], sv.heading[r])
            for r in members
        ]  # fmt: skip
        kept.append({"cell_id": cell.cell_id, "crs": cell.crs, "bounds": list(cell.bounds), "observations": obs,
                     "scene_ids": cell.scene_ids})  # fmt: skip
    shards = [kept[i : i + cfg.cells_per_shard] for i in range(0, len(kept), cfg.cells_per_shard)]
    plan = Plan(len(sv), len(cells), shards, {s.scene_id: s for s in scenes}, rejects, skipped)
    plan.fingerprint = _fingerprint(cfg, plan)
    return plan


def _fingerprint(cfg: PrepareConfig, plan: Plan) -> str:
    settings = {k: to_dict(getattr(cfg, k)) for k in _SHAPING}
    cells = [[c["cell_id"], [o["obs_id"] for o in c["observations"]], c["scene_ids"]] for s in plan.shards for c in s]
    scenes = sorted((s.scene_id, sorted((b, v.uri, v.index) for b, v in s.bands.items())) for s in plan.scenes.values())
    text = json.dumps([settings, cells, scenes], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------ outputs


def _paths(cfg: PrepareConfig) -> dict[str, str]:
    return {name: storage.join(cfg.out, name) for name in ("manifest", "tiles", "_shards", "_plan.json",
                                                           "rejects.csv", "summary.json")}  # fmt: skip


def prepare_output(cfg: PrepareConfig, fingerprint: str) -> None:
    """Clear the output (``overwrite``) or check that a rerun is the same job; record the plan."""
    s3 = s3_options(cfg)
    paths = _paths(cfg)
    fs, _ = storage.resolve(cfg.out, s3)
    if cfg.overwrite:
        for name, uri in paths.items():
            _, path = storage.resolve(uri, s3)
            info = fs.get_file_info(path)
            if info.type == pafs.FileType.Directory:
                fs.delete_dir(path)
            elif info.type == pafs.FileType.File:
                fs.delete_file(path)
            del name
    try:
        previous = json.loads(storage.read_bytes(paths["_plan.json"], s3))
    except FileNotFoundError:
        previous = None
    if previous is not None and previous.get("fingerprint") != fingerprint:
        raise FileExistsError(
            f"{cfg.out} holds the output of another job (other inputs or settings: plan "
            f"{previous.get('fingerprint')} != {fingerprint}); set overwrite=true or choose another `out`"
        )
    storage.ensure_dir(cfg.out, s3)
    storage.write_bytes(paths["_plan.json"], json.dumps({"fingerprint": fingerprint}).encode(), s3)


def shard_record_uri(out: str, shard: int) -> str:
    return storage.join(out, "_shards", f"{shard:05d}.json")


def read_shard_records(cfg: PrepareConfig, shards: int) -> dict[int, dict[str, Any]]:
    """The records of the complete shards (by shard index)."""
    s3 = s3_options(cfg)
    fs, path = storage.resolve(storage.join(cfg.out, "_shards"), s3)
    handler = getattr(fs, "handler", None)
    if handler is not None and hasattr(handler.fs, "invalidate_cache"):
        handler.fs.invalidate_cache(path)  # s3fs caches listings: the tasks wrote records since the last one
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    records = {}
    for info in infos:
        name = posixpath.basename(info.path)
        if name.endswith(".json") and name[:-5].isdigit() and int(name[:-5]) < shards:
            with fs.open_input_stream(info.path) as f:
                records[int(name[:-5])] = json.loads(f.read())
    return records


def process_shard(item: dict[str, Any], opts: CutOptions, out: str) -> dict[str, Any]:
    """Cut every cell of one shard; write its Parquet file, then its record. Runs in a Ray task."""
    start = time.monotonic()
    payload = json.loads(item["payload"])
    scenes = {k: inputs.Scene.from_dict(v) for k, v in payload["scenes"].items()}
    counter = rangeio.ByteCounter()
    rows, rejects, scene_of = [], [], {}
    for cell in payload["cells"]:
        result = cut_cell(cell, scenes, opts, counter)
        rejects.extend(result.rejects)
        if result.row is not None and result.row["observations"]:
            rows.append(result.row)
            scene_of[result.cell_id] = result.scene_id
    shard = int(item["shard"])
    manifest_file = storage.join(out, "manifest", f"part-{shard:05d}.parquet")
    fs, path = storage.resolve(manifest_file, opts.s3)
    if rows:
        table = pa.Table.from_pylist(rows, schema=schema.MANIFEST_SCHEMA)
        fs.create_dir(posixpath.dirname(path), recursive=True)
        per_group = max(1, int((32 << 20) / max(1, table.nbytes / len(rows))))  # ~32 MiB row groups
        pq.write_table(table, path, filesystem=fs, compression="zstd", row_group_size=per_group)
    elif fs.get_file_info(path).type == pafs.FileType.File:
        fs.delete_file(path)
    record = {
        "shard": shard, "cells": len(payload["cells"]), "tiles": len(rows),
        "observations": sum(len(r["observations"]) for r in rows), "rejects": rejects, "scenes": scene_of,
        "bytes_read": counter.bytes, "requests": counter.requests, "seconds": time.monotonic() - start,
        "attempt": uuid.uuid4().hex,
    }  # fmt: skip
    storage.write_bytes(shard_record_uri(out, shard), json.dumps(record).encode(), opts.s3)
    return {k: record[k] for k in ("shard", "cells", "tiles", "observations", "bytes_read", "seconds")}


def shard_items(plan: Plan, todo: Sequence[int]) -> list[dict[str, Any]]:
    """One self-contained item per shard: its cells and just the scenes they need (JSON text)."""
    items = []
    for k in todo:
        cells = plan.shards[k]
        needed = {s for c in cells for s in c["scene_ids"]}
        scenes = {s: plan.scenes[s].to_dict() for s in sorted(needed)}
        items.append({"shard": k, "payload": json.dumps({"cells": cells, "scenes": scenes})})
    return items


def run_shards(cfg: PrepareConfig, plan: Plan, todo: Sequence[int], log: TextIO | None) -> list[dict[str, Any]]:
    """Cut the ``todo`` shards as Ray Data tasks (a shard of cells per task); a progress bar on ``log``."""
    opts = CutOptions.from_config(cfg)
    ds = ray.data.from_items(shard_items(plan, todo), override_num_blocks=max(1, len(todo)))
    ds = ds.map(
        process_shard, fn_kwargs={"opts": opts, "out": cfg.out}, num_cpus=cfg.num_cpus_per_task,
        concurrency=cfg.concurrency or None,
    )  # fmt: skip
    kill_after = int(os.environ.get(FAULT_ENV, "0") or 0)
    results = []
    bar = tqdm(total=len(todo), desc="shards", unit="shard", file=log or io.StringIO(), mininterval=1.0)
    for row in ds.iter_rows():
        results.append(row)
        bar.update(1)
        bar.set_postfix(tiles=sum(r["tiles"] for r in results), refresh=False)
        if kill_after and len(results) >= kill_after:
            print(f"[fault injection] SIGKILL the driver after {len(results)} shards", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    bar.close()
    return results


# ------------------------------------------------------------------------ summary


def summarize(
    plan: Plan, records: dict[int, dict[str, Any]], resumed: int, seconds: float
) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """(summary, every rejection) of the whole job, resumed shards included."""
    rejects = list(plan.rejects) + [tuple(r) for k in sorted(records) for r in records[k]["rejects"]]
    reasons: dict[str, int] = {}
    for _, reason, _ in rejects:
        reasons[reason] = reasons.get(reason, 0) + 1
    tiles = sum(r["tiles"] for r in records.values())
    return {
        "street_views": plan.street_views, "cells": plan.cells, "cells_skipped_min_obs": plan.cells_skipped,
        "cells_cut": sum(len(s) for s in plan.shards), "tiles": tiles,
        "observations_kept": sum(r["observations"] for r in records.values()), "rejected": dict(sorted(reasons.items())),
        "shards": len(plan.shards), "shards_complete": len(records), "shards_resumed": resumed,
        "bytes_read": sum(r["bytes_read"] for r in records.values()), "seconds": round(seconds, 3),
        "fingerprint": plan.fingerprint,
    }, rejects  # fmt: skip


def write_rejects(uri: str, rejects: Sequence[tuple[str, str, str]], s3: storage.S3Options) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "reason", "detail"])
    w.writerows(rejects)
    storage.write_bytes(uri, buf.getvalue().encode(), s3)


@dataclass
class PrepareResult:
    manifest_uri: str
    summary: dict[str, Any]
    shards_run: list[int]


def run(
    cfg: PrepareConfig, log: TextIO | None = sys.stderr, connect: Callable[[], None] | None = None
) -> PrepareResult:
    """Plan, cut the shards not yet complete, write rejects and summary.

    ``connect`` joins or starts Ray; it is called only once the inputs are read and there is
    work to do, so bad inputs fail fast.
    """
    start = time.monotonic()
    s3 = s3_options(cfg)
    plan = build_plan(cfg)
    prepare_output(cfg, plan.fingerprint)
    done = read_shard_records(cfg, len(plan.shards))
    todo = [k for k in range(len(plan.shards)) if k not in done]
    if log is not None:
        print(
            f"[prepare] {plan.street_views} street views -> {plan.cells} cells ({plan.cells_skipped} under min_obs), "
            f"{len(plan.shards)} shards; {len(done)} already complete, {len(todo)} to cut", file=log, flush=True,
        )  # fmt: skip
    if todo:
        if connect is not None:
            connect()
        run_shards(cfg, plan, todo, log)
    records = read_shard_records(cfg, len(plan.shards))
    missing = sorted(set(range(len(plan.shards))) - set(records))
    if missing:
        raise RuntimeError(f"shards {missing[:10]} finished without a record under {cfg.out}/_shards")
    summary, rejects = summarize(plan, records, len(done), time.monotonic() - start)
    paths = _paths(cfg)
    write_rejects(paths["rejects.csv"], rejects, s3)
    storage.write_bytes(paths["summary.json"], json.dumps(summary, indent=2).encode(), s3)
    return PrepareResult(paths["manifest"], summary, todo)
