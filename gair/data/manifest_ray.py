"""Building and validating manifests as Ray Data jobs (the cluster-wide twin of :mod:`gair.data.manifest`).

The driver only lists: the reference layout (:func:`manifest.plan_folders`) or the table of
pairs (:func:`manifest.table_jobs`) becomes a table of *units* (a group of tiles with their
candidate street views, as URIs), cut into chunks of about ``tiles_per_task`` tiles; that
table is a Ray Dataset, and a ``map_batches`` task per chunk does the work of the threaded
builder with the same functions: reads the metadata JSONs (layout), reads and checks each
tile (:func:`manifest.build_tile`), folds the results (:class:`manifest.BuildTally`) and
writes the chunk's rows with :class:`manifest.ManifestWriter` (same schema, shard and
row-group caps) as ``part-<chunk>-<n>.parquet``. Each task returns its counts and
rejections, which the driver gathers into one :class:`manifest.BuildResult`.

Validation lists the shards on the driver, checks the first shard's schema there (a
wrong input fails before any task starts), then checks row groups in parallel tasks
(:func:`manifest.check_row`); duplicate ids are found on the driver, in file order, from
the ids the tasks return.

Shards go straight from the tasks to ``out_uri``: on a cluster of several nodes use an
object store (``s3://``); a local path is local to each node.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import os
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa
import ray
import ray.data

from gair.data import manifest, schema, storage
from gair.sensors import S2_BANDS_10

_OBS = pa.struct(
    [
        ("obs_id", pa.string()), ("sv_uri", pa.string()), ("meta_uri", pa.string()), ("lon", pa.float64()),
        ("lat", pa.float64()), ("capture_time", pa.string()), ("heading", pa.float64()), ("meta_json", pa.string()),
    ]
)  # fmt: skip
#: One unit of work: a group of tiles that share their candidate observations.
UNIT_SCHEMA = pa.schema(
    [
        ("chunk", pa.int32()), ("group", pa.string()), ("tile_ids", pa.list_(pa.string())),
        ("rs_uris", pa.list_(pa.string())), ("obs", pa.list_(_OBS)),
    ]
)  # fmt: skip
_REJECT = pa.struct([("id", pa.string()), ("reason", pa.string()), ("detail", pa.string())])
_BUILT = pa.schema(
    [
        ("chunk", pa.int32()), ("tiles", pa.int64()), ("observations", pa.int64()), ("shards", pa.list_(pa.string())),
        ("rejected", pa.list_(_REJECT)),
    ]
)  # fmt: skip
_CHECKED = pa.schema(
    [
        ("file", pa.int32()), ("row_group", pa.int32()), ("fatal", pa.string()), ("tiles", pa.int64()),
        ("observations", pa.int64()), ("tile_ids", pa.list_(pa.string())),
        ("obs_ids", pa.list_(pa.list_(pa.string()))), ("bad", pa.list_(_REJECT)),
    ]
)  # fmt: skip


def configure_progress(enabled: bool = True) -> None:
    """Ray Data's progress bars (the pipeline turns them off for training; a build wants them)."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = enabled
    ctx.enable_operator_progress_bars = enabled


def _collect(ds: ray.data.Dataset) -> list[dict[str, Any]]:
    """Every output row of a (small) result dataset, as plain Python values."""
    return [r for b in ds.iter_batches(batch_size=None, batch_format="pyarrow") for r in b.to_pylist()]


def _cluster_cpus() -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


# ----------------------------------------------------------------------- building


def _obs_record(o: Mapping[str, Any]) -> dict[str, Any]:
    return {k: o.get(k) for k in ("obs_id", "sv_uri", "lon", "lat", "capture_time", "heading", "meta_json")}


def folder_units(plan: manifest.FolderPlan) -> list[dict[str, Any]]:
    """One unit per group with an RS tile (its street views still to be read: metadata URIs)."""
    units = []
    for group in sorted(plan.tiles):
        tiles = plan.tiles[group]
        svs = plan.groups.get(group, [])
        units.append({
            "group": group, "tile_ids": [t for t, _ in tiles], "rs_uris": [u for _, u in tiles],
            "obs": [{"obs_id": uuid, "sv_uri": sv, "meta_uri": meta} for uuid, sv, meta in svs],
        })  # fmt: skip
    return units


def table_units(jobs: Sequence[manifest._TileJob]) -> list[dict[str, Any]]:
    """One unit per tile of a table of pairs (observations complete)."""
    return [
        {
            "group": j.rs_uri,
            "tile_ids": [j.tile_id],
            "rs_uris": [j.rs_uri],
            "obs": [_obs_record(o) for o in j.candidates],
        }
        for j in jobs
    ]


def chunk_units(units: Sequence[dict[str, Any]], tiles_per_chunk: int) -> list[pa.Table]:
    """Units cut into chunks of about ``tiles_per_chunk`` tiles (a unit is never split), as Arrow tables."""
    chunks: list[list[dict[str, Any]]] = [[]]
    n = 0
    for unit in units:
        if n >= tiles_per_chunk:
            chunks.append([])
            n = 0
        chunks[-1].append(unit)
        n += len(unit["tile_ids"])
    return [
        pa.Table.from_pylist([{**u, "chunk": k} for u in chunk], schema=UNIT_SCHEMA)
        for k, chunk in enumerate(chunks)
        if chunk
    ]


def _candidate(o: Mapping[str, Any], s3: storage.S3Options | None) -> dict[str, Any]:
    """The observation dict of a unit's street view (reading its metadata JSON for the reference layout)."""
    if o["meta_uri"] is not None:
        return manifest.folder_observation(o["obs_id"], o["sv_uri"], o["meta_uri"], s3)
    return {
        "obs_id": o["obs_id"], "sv_bytes": None, "sv_uri": o["sv_uri"], "lon": o["lon"], "lat": o["lat"],
        "capture_time": o["capture_time"], "heading": o["heading"], "meta_json": o["meta_json"],
    }  # fmt: skip


def _ordered_map(pool: cf.Executor, fn: Callable[[Any], Any], items: Sequence[Any], window: int) -> Iterator[Any]:
    """``pool.map`` with at most ``window`` items in flight (read-ahead without holding a whole chunk's bytes)."""
    pending: deque[cf.Future] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def build_chunks(
    batch: pa.Table,
    *,
    out_uri: str,
    inline: bool,
    s3: storage.S3Options | None,
    writer_kwargs: Mapping[str, Any],
    threads: int,
) -> pa.Table:
    """``map_batches`` body: build the chunks of ``batch`` (rows of :data:`UNIT_SCHEMA`), write their shards.

    Per chunk: every street view's observation (metadata read), then every tile (:func:`manifest.build_tile`)
    on ``threads`` threads, folded unit by unit (:class:`manifest.BuildTally`) into ``part-<chunk>-<n>.parquet``.
    """
    units = batch.to_pylist()
    window = 4 * max(1, threads)
    out = []
    with cf.ThreadPoolExecutor(max(1, threads)) as pool:  # I/O (object GETs) overlaps within a task
        for chunk in sorted({u["chunk"] for u in units}):
            mine = [u for u in units if u["chunk"] == chunk]
            flat = [o for u in mine for o in u["obs"]]
            candidates = iter(list(_ordered_map(pool, lambda o: _candidate(o, s3), flat, window)))
            jobs = []  # (unit index, tile job), in unit order
            for k, u in enumerate(mine):
                group = [next(candidates) for _ in u["obs"]]
                jobs.extend((k, j) for j in manifest.group_jobs(list(zip(u["tile_ids"], u["rs_uris"])), group))
            tallies = [manifest.BuildTally() for _ in mine]
            writer = manifest.ManifestWriter(
                out_uri, s3=s3, name_prefix=f"part-{chunk:05d}-", prepare=False, **writer_kwargs
            )
            with writer:
                results = _ordered_map(pool, lambda kj: manifest.build_tile(kj[1], inline, s3), jobs, window)
                for (k, job), result in zip(jobs, results):
                    row = tallies[k].add(job, *result)
                    if row is not None:
                        writer.write(row)
            rejected = []
            for tally in tallies:
                tally.finish()
                rejected.extend(tally.rejected)
            out.append({
                "chunk": chunk, "tiles": sum(t.tiles for t in tallies),
                "observations": sum(t.observations for t in tallies), "shards": writer.shards,
                "rejected": [{"id": i, "reason": r, "detail": d} for i, r, d in rejected],
            })  # fmt: skip
    return pa.Table.from_pylist(out, schema=_BUILT)


def run_build(
    units: Sequence[dict[str, Any]],
    out_uri: str,
    *,
    inline: bool = True,
    s3: storage.S3Options | None = None,
    writer_kwargs: Mapping[str, Any] | None = None,
    pre_rejected: Sequence[tuple[str, str, str]] = (),
    tiles_per_task: int | None = None,
    task_threads: int = 4,
    progress: bool = True,
    connect: Callable[[], None] | None = None,
) -> manifest.BuildResult:
    """Build the units on Ray Data; shards under ``out_uri`` (prepared here: see ``writer_kwargs['overwrite']``).

    ``tiles_per_task``: tiles per task and so per shard at most (default: ``rows_per_shard``,
    less when that leaves CPUs of the cluster idle). ``connect`` joins or starts Ray (called
    once the input is listed and the output directory is usable).
    """
    kwargs = dict(writer_kwargs or {})
    s3 = (s3 or storage.S3Options()).resolved()  # the driver's endpoint, for the tasks too
    manifest.prepare_output(out_uri, bool(kwargs.pop("overwrite", False)), s3)
    if connect is not None:
        connect()
    rows_per_shard = int(kwargs.get("rows_per_shard", 1024))
    total = sum(len(u["tile_ids"]) for u in units)
    if tiles_per_task is None:  # at least ~4 tasks per CPU while that keeps shards of >= 16 tiles
        spread = math.ceil(total / (4 * _cluster_cpus()))
        tiles_per_task = min(rows_per_shard, max(16, spread))
    result = manifest.BuildResult(out_uri, rejected=list(pre_rejected))
    if not units:
        return result
    configure_progress(progress)
    ds = ray.data.from_arrow(chunk_units(units, max(1, tiles_per_task)))
    ds = ds.map_batches(
        build_chunks, batch_size=None, batch_format="pyarrow", num_cpus=1,
        fn_kwargs={"out_uri": out_uri, "inline": inline, "s3": s3, "writer_kwargs": kwargs, "threads": task_threads},
    )  # fmt: skip
    for row in sorted(_collect(ds), key=lambda r: r["chunk"]):
        result.tiles += row["tiles"]
        result.observations += row["observations"]
        result.shards.extend(row["shards"])
        result.rejected.extend((r["id"], r["reason"], r["detail"]) for r in row["rejected"])
    return result


def build_from_folders(
    root: str, out_uri: str, *, s3: storage.S3Options | None = None, **kwargs: Any
) -> manifest.BuildResult:
    """:func:`manifest.build_from_folders` on Ray Data (keywords of :func:`run_build`)."""
    plan = manifest.plan_folders(root, s3)
    return run_build(folder_units(plan), out_uri, s3=s3, pre_rejected=plan.rejected, **kwargs)


def build_from_table(
    table_uri: str,
    out_uri: str,
    *,
    s3: storage.S3Options | None = None,
    columns: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> manifest.BuildResult:
    """:func:`manifest.build_from_table` on Ray Data (keywords of :func:`run_build`)."""
    return run_build(table_units(manifest.table_jobs(table_uri, s3, columns)), out_uri, s3=s3, **kwargs)


# --------------------------------------------------------------------- validating


def check_row_groups(
    batch: pa.Table,
    *,
    uri: str,
    decode_images: bool,
    required_bands: Sequence[str],
    s3: storage.S3Options | None,
    threads: int,
) -> pa.Table:
    """``map_batches`` body: check the row groups ``(file, path, part, parts)`` of ``batch``: every
    ``parts``-th row group of the file from ``part`` on. One output row per row group."""
    fs, _ = storage.resolve(uri, s3)
    out = []

    def check(row: Mapping[str, Any]) -> list:
        return manifest.check_row(row, decode_images=decode_images, required_bands=required_bands, s3=s3)

    with cf.ThreadPoolExecutor(max(1, threads)) as pool:
        for unit in batch.to_pylist():
            try:
                pf = manifest.open_manifest_file(fs, unit["path"])
            except schema.SchemaError as exc:
                out.append(_checked(unit["file"], -1, str(exc)))
                continue
            for rg in range(unit["part"], pf.num_row_groups, unit["parts"]):
                rec = _checked(unit["file"], rg)
                try:
                    for rows in manifest.iter_row_group(pf, unit["path"], rg):
                        for row, problems in zip(rows, pool.map(check, rows)):
                            obs = row.get("observations") or []
                            rec["tiles"] += 1
                            rec["observations"] += len(obs)
                            rec["tile_ids"].append(str(row.get("tile_id")))
                            rec["obs_ids"].append([str(o.get("obs_id")) for o in obs])
                            rec["bad"].extend(
                                {"id": p.item_id, "reason": p.reason, "detail": p.detail} for p in problems
                            )
                except schema.SchemaError as exc:
                    rec = _checked(unit["file"], rg, str(exc))
                out.append(rec)
    return pa.Table.from_pylist(out, schema=_CHECKED)


def _checked(file: int, row_group: int, fatal: str | None = None) -> dict[str, Any]:
    return {"file": file, "row_group": row_group, "fatal": fatal, "tiles": 0, "observations": 0, "tile_ids": [],
            "obs_ids": [], "bad": []}  # fmt: skip


def validate_manifest(
    uri: str,
    *,
    decode_images: bool = True,
    required_bands: Sequence[str] = S2_BANDS_10,
    s3: storage.S3Options | None = None,
    task_threads: int = 4,
    progress: bool = True,
    connect: Callable[[], None] | None = None,
) -> manifest.ValidationReport:
    """:func:`manifest.validate_manifest` on Ray Data: row groups checked in parallel tasks.

    The same report (problems in another order); ``fatal`` names the first unusable file.
    """
    report = manifest.ValidationReport(uri)
    s3 = (s3 or storage.S3Options()).resolved()
    try:
        files = manifest.manifest_files(uri, s3)
        fs, _ = storage.resolve(uri, s3)
        manifest.open_manifest_file(fs, files[0])  # a wrong input fails here, before Ray starts
    except (schema.SchemaError, FileNotFoundError) as exc:
        report.fatal = str(exc)
        return report
    if connect is not None:
        connect()
    parts = max(1, min(16, math.ceil(2 * _cluster_cpus() / len(files))))  # split files when there are few
    units = [{"file": i, "path": p, "part": k, "parts": parts} for i, p in enumerate(files) for k in range(parts)]
    configure_progress(progress)
    ds = ray.data.from_items(units, override_num_blocks=len(units))
    ds = ds.map_batches(
        check_row_groups, batch_size=1, batch_format="pyarrow", num_cpus=1,
        fn_kwargs={"uri": uri, "decode_images": decode_images, "required_bands": list(required_bands), "s3": s3,
                   "threads": task_threads},
    )  # fmt: skip
    results = sorted(_collect(ds), key=lambda r: (r["file"], r["row_group"]))
    fatal = [r for r in results if r["fatal"]]
    if fatal:
        report.fatal = fatal[0]["fatal"]
        results = [r for r in results if r["file"] < fatal[0]["file"]]  # what a sequential check reads first
    tile_ids: set[str] = set()
    obs_ids: set[str] = set()
    for r in results:
        report.tiles += r["tiles"]
        report.observations += r["observations"]
        report.bad.extend((b["id"], b["reason"], b["detail"]) for b in r["bad"])
        for tid, oids in zip(r["tile_ids"], r["obs_ids"]):
            manifest._check_ids({"tile_id": tid, "observations": [{"obs_id": o} for o in oids]}, tile_ids, obs_ids,
                                report)  # fmt: skip
    return report


_STARTED: list[bool] = []  # connect_ray initialized Ray in this process


def connect_ray() -> None:
    """Join the cluster at ``RAY_ADDRESS`` when it is set, else start a private local Ray (no-op if connected)."""
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
    else:
        ray.init(address="local", include_dashboard=False)
    _STARTED.append(True)


def disconnect_ray() -> None:
    """Leave (or stop) the Ray that :func:`connect_ray` connected to; a Ray connected by others stays."""
    if _STARTED:
        _STARTED.clear()
        ray.shutdown()
