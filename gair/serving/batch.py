"""Batch embedding export on Ray Data (the library behind ``jobs/embed.py``).

Inputs and what comes out (one GeoParquet row per ...):

| inputs | kind | row | geometry | embeddings |
|---|---|---|---|---|
| points table | ``points`` | point | Point | ``location_embedding`` |
| manifest | ``tiles`` | tile | Polygon (footprint) | ``rs_embedding`` (global: mean of the tokens) |
| manifest + ``observations`` | ``observations`` | street view | Point | ``location_embedding``, ``rs_embedding`` (localized at the view), ``sv_embedding``, ``sv_projected`` |
| points + manifest | ``points_in_tiles`` | point | Point | ``location_embedding``, ``rs_embedding`` (localized at the point in the first tile, in manifest order, that covers it) |

Every row also has ``id``, ``tile_id``, ``lon``, ``lat`` (the point, or the tile centre)
and ``error`` (empty, or why an embedding is missing: then it is a NaN vector, see
``geoparquet.embedding_array``). A point that no tile covers keeps its row (``tile_id``
null, ``rs_embedding`` NaN) and is counted and listed in the summary. The
model reaches the actors through the object store (``gair.eval.extract.ModelPayload``);
each actor holds one :class:`gair.serving.embedder.Embedder`, on a GPU when it has one.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from gair import geo
from gair.data import decode, schema, storage
from gair.serving import geoparquet

KINDS = ("points", "tiles", "observations", "points_in_tiles")
EMBEDDINGS = {
    "points": ("location_embedding",),
    "tiles": ("rs_embedding",),
    "observations": ("location_embedding", "rs_embedding", "sv_embedding", "sv_projected"),
    "points_in_tiles": ("location_embedding", "rs_embedding"),
}
TILE_HEADER = ["tile_id", "crs", "transform", "width", "height"]


class BadInputError(ValueError):
    """Input the export cannot use (missing columns, bad coordinates, empty manifest): exit 2."""


@dataclass(frozen=True)
class EmbedOptions:
    """What ``jobs/embed.py`` parses; every field is one command-line option."""

    model: str
    out: str
    points: str | None = None
    manifest: str | None = None
    observations: bool = False
    id_column: str = "id"
    query_mode: str | None = None
    batch_size: int = 1024
    tile_batch_size: int = 8
    num_workers: int | None = None
    num_gpus_per_worker: float | None = None
    num_cpus_per_worker: float = 1.0
    rows_per_shard: int = 100_000
    overwrite: bool = False
    plot_points: int = 50_000

    @property
    def kind(self) -> str:
        if self.points and self.manifest:
            return "points_in_tiles"
        if self.points:
            return "points"
        return "observations" if self.observations else "tiles"


@dataclass
class EmbedSummary:
    kind: str
    out: str
    rows: int = 0
    shards: list[str] = field(default_factory=list)
    outside: list[tuple[str, float, float]] = field(default_factory=list)  # points no tile covers
    row_errors: list[tuple[str, str]] = field(default_factory=list)  # (id, error), first 1000
    error_count: int = 0
    bad_tiles: list[tuple[str, str]] = field(default_factory=list)
    sample_lonlat: np.ndarray | None = None
    sample_emb: np.ndarray | None = None
    seconds: float = 0.0


# ------------------------------------------------------------------------- inputs


def read_points(uri: str, id_column: str = "id", s3: storage.S3Options | None = None) -> pa.Table:
    """A CSV, Parquet or GeoParquet of points -> table ``id`` (string), ``lon``, ``lat`` (float64).

    Coordinates come from ``lon``/``lat`` columns, else from Point geometries (WKB column
    ``geometry``, assumed WGS84 (lon, lat)). Without ``id_column`` the row number is the id.
    """
    try:
        fs, path = storage.resolve(uri, s3)
        if uri.lower().endswith((".csv", ".csv.gz")):
            with fs.open_input_stream(path) as f:
                table = pacsv.read_csv(f)
        else:
            table = pq.read_table(path, filesystem=fs)
    except FileNotFoundError as exc:
        raise BadInputError(f"points file {uri} not found") from exc
    except (pa.ArrowInvalid, OSError) as exc:
        raise BadInputError(f"points file {uri} is not a readable CSV/Parquet: {exc}") from exc
    names = table.column_names
    if "lon" in names and "lat" in names:
        lon = np.asarray(table.column("lon").to_numpy(zero_copy_only=False), dtype=np.float64)
        lat = np.asarray(table.column("lat").to_numpy(zero_copy_only=False), dtype=np.float64)
    elif "geometry" in names:
        try:
            xy = np.array([geoparquet.parse_wkb_point(b) for b in table.column("geometry").to_pylist()])
        except Exception as exc:  # noqa: BLE001 - any unparsable geometry is bad input
            raise BadInputError(f"points file {uri}: geometry column is not WKB Points: {exc}") from exc
        lon, lat = xy[:, 0], xy[:, 1]
    else:
        raise BadInputError(f"points file {uri} needs columns lon and lat (or a WKB Point geometry); has {names}")
    if id_column in names:
        ids = [str(v) for v in table.column(id_column).to_pylist()]
    else:
        print(f"[embed] {uri} has no {id_column!r} column: ids are row numbers", file=sys.stderr)
        ids = [str(i) for i in range(table.num_rows)]
    bad = ~np.isfinite(lon) | ~np.isfinite(lat) | (np.abs(lon) > 180) | (np.abs(lat) > 90)
    if bad.any():
        first = [(ids[i], lon[i], lat[i]) for i in np.flatnonzero(bad)[:5]]
        raise BadInputError(
            f"points file {uri}: {int(bad.sum())} row(s) without valid (lon, lat) degrees; first (id, lon, lat): {first}"
        )
    return pa.table({"id": pa.array(ids, pa.string()), "lon": lon, "lat": lat})


def manifest_files(uri: str, s3: storage.S3Options | None = None) -> list[str]:
    from gair.data.pipeline import read_manifest_schema

    try:
        read_manifest_schema(uri, s3)
    except (FileNotFoundError, schema.SchemaError) as exc:
        raise BadInputError(f"manifest {uri}: {exc}") from exc
    return storage.list_parquet(uri, s3)


def read_tile_index(uri: str, s3: storage.S3Options | None = None) -> list[dict[str, Any]]:
    """The tiles' georeference only (no image bytes), in manifest order."""
    fs, _ = storage.resolve(uri, s3)
    rows: list[dict[str, Any]] = []
    for f in manifest_files(uri, s3):
        rows.extend(pq.read_table(f, filesystem=fs, columns=TILE_HEADER).to_pylist())
    if not rows:
        raise BadInputError(f"manifest {uri} holds no tiles")
    return rows


def assign_points(lonlat_N2: np.ndarray, tiles: Sequence[dict[str, Any]]) -> np.ndarray:
    """Index of the first tile (manifest order) whose footprint holds each point, -1 if none."""
    tile_of = np.full(len(lonlat_N2), -1, dtype=np.int64)
    for t, row in enumerate(tiles):
        todo = np.flatnonzero(tile_of < 0)
        if not len(todo):
            break
        try:
            info = decode.check_georeference(row)
        except decode.BadRowError:
            continue  # reported when the tile itself is read
        x0, y0, x1, y1 = geo.tile_bounds_lonlat(info.crs, info.transform, info.width, info.height)
        ll = lonlat_N2[todo]
        near = (ll[:, 0] >= x0 - 1e-6) & (ll[:, 0] <= x1 + 1e-6) & (ll[:, 1] >= y0 - 1e-6) & (ll[:, 1] <= y1 + 1e-6)
        if not near.any():
            continue
        xy = geo.lonlat_to_xy(ll[near], info.crs, info.transform, info.width, info.height)
        tile_of[todo[near][geo.inside(xy)]] = t
    return tile_of


# ------------------------------------------------------------------------- actor


class EmbedActor:
    """Rows of one input kind -> output rows (numpy columns); one model copy per actor."""

    def __init__(
        self,
        payload: dict[str, Any],
        kind: str,
        sv_mean: Sequence[float],
        sv_std: Sequence[float],
        query_mode: str | None = None,
        points_by_tile: Any = None,
        num_gpus: float = 0.0,
        torch_threads: int = 1,
    ) -> None:
        import torch

        from gair.eval.extract import _device
        from gair.serving.embedder import Embedder

        value = payload["ref"]
        if not hasattr(value, "build"):  # an ObjectRef (under Ray); a ModelPayload in-process
            import ray

            value = ray.get(value)
        if torch_threads > 0:
            torch.set_num_threads(torch_threads)
        self.embedder = Embedder(value.build(_device(num_gpus)), sv_mean, sv_std)
        self.kind, self.mode = kind, query_mode
        self.points_by_tile = points_by_tile["ref"] if points_by_tile is not None else None
        if self.points_by_tile is not None and not isinstance(self.points_by_tile, dict):
            import ray

            self.points_by_tile = ray.get(self.points_by_tile)
        print(f"[embed] {kind} actor: {self.embedder.cfg.size} model on {self.embedder.device}", flush=True)

    def __call__(self, table: pa.Table) -> dict[str, np.ndarray]:
        if self.kind == "points":
            return self._points(table)
        parts = [getattr(self, "_" + self.kind)(row) for row in table.to_pylist()]
        return _concat([p for p in parts if p is not None], EMBEDDINGS[self.kind], self.embedder.dim)

    def _points(self, table: pa.Table) -> dict[str, np.ndarray]:
        lonlat = np.stack([table.column("lon").to_numpy(), table.column("lat").to_numpy()], axis=1)
        n = len(lonlat)
        return _rows(
            ids=table.column("id").to_pylist(),
            tile_ids=[""] * n,  # no tile: null in the output
            lonlat=lonlat,
            geometry=geoparquet.wkb_points(lonlat),
            errors=[""] * n,
            location_embedding=(self.embedder.locations(lonlat), np.ones(n, bool)),
        )

    def _tile(self, row: dict) -> tuple[Any, np.ndarray | None, str]:
        """(tile, tokens (1, T, D), "") or (None, None, reason)."""
        try:
            tile = self.embedder.manifest_tile(row)
        except decode.BadRowError as exc:
            return None, None, f"tile {row.get('tile_id')}: {exc.reason}: {exc.detail}"
        return tile, self.embedder.rs_tokens(tile.rs_CSS[None]), ""

    def _tiles(self, row: dict) -> dict[str, np.ndarray]:
        tile, tokens, err = self._tile(row)
        dim = self.embedder.dim
        if tile is None:
            ring, emb = np.zeros((5, 2)), np.zeros((1, dim), np.float32)
        else:
            ring, emb = tile.footprint_lonlat(), self.embedder.rs_global(tokens)
        tid = str(row["tile_id"])
        return _rows(
            ids=[tid],
            tile_ids=[tid],
            lonlat=ring[:4].mean(0, keepdims=True),
            geometry=[geoparquet.wkb_polygon(ring)],
            errors=[err],
            rs_embedding=(emb, np.array([tile is not None])),
        )

    def _observations(self, row: dict) -> dict[str, np.ndarray] | None:
        obs = list(row.get("observations") or [])
        if not obs:
            return None
        lonlat = np.array([[_num(o.get("lon")), _num(o.get("lat"))] for o in obs], dtype=np.float64)
        ids = [str(o.get("obs_id")) for o in obs]
        out = self._at_points(row, ids, lonlat)
        images, which = [], []
        for j, o in enumerate(obs):
            try:
                images.append(decode.decode_sv(o, self.embedder.s3))
                which.append(j)
            except decode.BadRowError as exc:
                out["error"][j] = _join(out["error"][j], f"{exc.reason}: {exc.detail}")
        pooled, projected = self.embedder.street_views(images)
        for name, values in (("sv_embedding", pooled), ("sv_projected", projected)):
            full = np.zeros((len(obs), self.embedder.dim), np.float32)
            ok = np.zeros(len(obs), bool)
            full[which], ok[which] = values, True
            out[name], out[name + "_ok"] = full, ok
        return out

    def _points_in_tiles(self, row: dict) -> dict[str, np.ndarray] | None:
        pts = self.points_by_tile.get(str(row["tile_id"]))
        if pts is None:
            return None
        ids, lonlat = pts
        return self._at_points(row, list(ids), np.asarray(lonlat, dtype=np.float64))

    def _at_points(self, row: dict, ids: list[str], lonlat: np.ndarray) -> dict[str, np.ndarray]:
        """Location and localized RS embeddings at points of one tile; errors per point."""
        n, dim = len(ids), self.embedder.dim
        errors = [""] * n
        valid = np.isfinite(lonlat).all(1) & (np.abs(lonlat[:, 0]) <= 180) & (np.abs(lonlat[:, 1]) <= 90)
        loc = np.zeros((n, dim), np.float32)
        if valid.any():
            loc[valid] = self.embedder.locations(lonlat[valid])
        for i in np.flatnonzero(~valid):
            errors[i] = f"{decode.Reason.LONLAT_OUT_OF_RANGE}: lon, lat = {lonlat[i].tolist()}"
        rs, rs_ok = np.zeros((n, dim), np.float32), np.zeros(n, bool)
        tile, tokens, err = self._tile(row)
        if tile is None:
            errors = [_join(e, err) for e in errors]
        elif valid.any():
            xy, inside = tile.xy(lonlat[valid])
            idx = np.flatnonzero(valid)
            rs[idx[inside]] = self.embedder.rs_local(tokens, xy[inside], self.mode)
            rs_ok[idx[inside]] = True
            for i in idx[~inside]:
                errors[i] = _join(errors[i], f"{decode.Reason.OBS_OUTSIDE_TILE}: tile {row['tile_id']}")
        safe = np.where(np.isfinite(lonlat), lonlat, 0.0)
        return _rows(
            ids=ids,
            tile_ids=[str(row["tile_id"])] * n,
            lonlat=lonlat,
            geometry=geoparquet.wkb_points(safe),
            errors=errors,
            location_embedding=(loc, valid),
            rs_embedding=(rs, rs_ok),
        )


def _rows(*, ids, tile_ids, lonlat, geometry, errors, **embeddings) -> dict[str, np.ndarray]:
    out = {
        "id": np.array(ids, dtype=object),
        "tile_id": np.array(tile_ids, dtype=object),
        "lon": np.asarray(lonlat, dtype=np.float64)[:, 0].copy(),
        "lat": np.asarray(lonlat, dtype=np.float64)[:, 1].copy(),
        "geometry": np.array(geometry, dtype=object),
        "error": np.array(errors, dtype=object),
    }
    for name, (values, ok) in embeddings.items():
        out[name], out[name + "_ok"] = np.asarray(values, np.float32), np.asarray(ok, bool)
    return out


def _concat(parts: list[dict[str, np.ndarray]], names: Sequence[str], dim: int) -> dict[str, np.ndarray]:
    if not parts:  # a batch with nothing to embed (tiles without points)
        empty = _rows(ids=[], tile_ids=[], lonlat=np.zeros((0, 2)), geometry=[], errors=[])
        for n in names:
            empty[n], empty[n + "_ok"] = np.zeros((0, dim), np.float32), np.zeros(0, bool)
        return empty
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if a else b


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)


# ----------------------------------------------------------------------- driver


def to_table(batch: dict[str, np.ndarray], names: Sequence[str]) -> pa.Table:
    """An actor's numpy output -> the GeoParquet table (embeddings as fixed-size lists)."""
    cols: dict[str, pa.Array] = {
        "id": pa.array(batch["id"].tolist(), pa.string()),
        "tile_id": pa.array([t if isinstance(t, str) and t else None for t in batch["tile_id"].tolist()], pa.string()),
        "lon": pa.array(batch["lon"], pa.float64()),
        "lat": pa.array(batch["lat"], pa.float64()),
    }
    rows = len(batch["id"])
    for n in names:
        if n in batch:
            cols[n] = geoparquet.embedding_array(np.asarray(batch[n]), np.asarray(batch[n + "_ok"], bool))
        else:  # e.g. rs_embedding of a point outside every tile
            dim = next(np.asarray(batch[m]).shape[1] for m in names if m in batch)
            cols[n] = geoparquet.embedding_array(np.zeros((rows, dim), np.float32), np.zeros(rows, bool))
    cols["error"] = pa.array(batch["error"].tolist(), pa.string())
    cols[geoparquet.GEOMETRY_COLUMN] = pa.array(batch["geometry"].tolist(), pa.binary())
    return pa.table(cols)


@dataclass
class Plan:
    """The inputs, read and checked on the driver before any Ray work."""

    points: pa.Table | None = None
    tiles: list[dict[str, Any]] | None = None
    manifest_files: list[str] = field(default_factory=list)
    points_by_tile: dict[str, tuple[list[str], np.ndarray]] | None = None
    outside: list[tuple[str, float, float]] = field(default_factory=list)


def plan_inputs(opts: EmbedOptions, s3: storage.S3Options | None = None, stream: TextIO | None = sys.stderr) -> Plan:
    """Read the points and the tile index; assign points to tiles. Raises BadInputError."""
    plan = Plan()
    if opts.points:
        plan.points = read_points(opts.points, opts.id_column, s3)
    if opts.manifest:
        plan.tiles = read_tile_index(opts.manifest, s3)
        plan.manifest_files = manifest_files(opts.manifest, s3)
    if opts.kind == "points_in_tiles":
        points, tiles = plan.points, plan.tiles
        lonlat = np.stack([points.column("lon").to_numpy(), points.column("lat").to_numpy()], axis=1)
        tile_of = assign_points(lonlat, tiles)
        ids = points.column("id").to_pylist()
        plan.points_by_tile = {}
        for t in np.unique(tile_of[tile_of >= 0]):
            sel = np.flatnonzero(tile_of == t)
            plan.points_by_tile[str(tiles[t]["tile_id"])] = ([ids[i] for i in sel], lonlat[sel])
        outside = np.flatnonzero(tile_of < 0)
        plan.outside = [(ids[i], float(lonlat[i, 0]), float(lonlat[i, 1])) for i in outside]
        _log(stream, f"{len(ids) - len(outside)} of {len(ids)} points inside {len(plan.points_by_tile)} tiles; "
                     f"{len(outside)} outside every tile")  # fmt: skip
    return plan


def run_embed(
    opts: EmbedOptions,
    local_dir: str | Path,
    plan: Plan,
    *,
    s3: storage.S3Options | None = None,
    stream: TextIO | None = sys.stderr,
    progress_every_s: float = 5.0,
) -> EmbedSummary:
    """Embed on Ray Data and write GeoParquet shards; returns what happened."""
    import ray

    from gair.eval.extract import ModelPayload, quiet_data_context
    from gair.hub import load_preprocessing

    start = time.monotonic()
    kind = opts.kind
    summary = EmbedSummary(kind, opts.out, outside=list(plan.outside))
    names = EMBEDDINGS[kind]
    points, tiles, points_by_tile = plan.points, plan.tiles, plan.points_by_tile

    pre = load_preprocessing(local_dir)
    from gair.serving.embedder import default_sv_statistics

    mean, std = default_sv_statistics()
    gpus = _gpus_per_worker(opts)
    if opts.num_workers:
        workers = opts.num_workers
    elif gpus:
        workers = max(1, int(ray.cluster_resources().get("GPU", 0) / gpus))  # one actor per GPU
    else:
        workers = 1
    _log(stream, f"{kind}: {workers} actor(s), {gpus or 0:g} GPU and {opts.num_cpus_per_worker:g} CPU each")
    quiet_data_context()
    payload = {"ref": ray.put(ModelPayload.from_dir(local_dir))}
    ctor = {
        "payload": payload, "kind": kind, "sv_mean": pre.get("sv_mean") or mean, "sv_std": pre.get("sv_std") or std,
        "query_mode": opts.query_mode, "num_gpus": gpus,
        "torch_threads": max(1, int(np.ceil(opts.num_cpus_per_worker))),
        "points_by_tile": {"ref": ray.put(points_by_tile)} if points_by_tile is not None else None,
    }  # fmt: skip
    writer = geoparquet.GeoParquetWriter(
        opts.out,
        ["Polygon"] if kind == "tiles" else ["Point"],
        rows_per_shard=opts.rows_per_shard,
        overwrite=opts.overwrite,
        s3=s3,
    )
    sample = _Sample(opts.plot_points, "location_embedding" if kind == "points" else "rs_embedding")

    def consume(ds: Any, what: str, total: int, ctor_kind: str, batch_size: int) -> None:
        ds = ds.map_batches(
            EmbedActor,
            fn_constructor_kwargs={**ctor, "kind": ctor_kind},
            batch_size=batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=opts.num_cpus_per_worker,
            num_gpus=gpus or None,
        )
        done, rows, last, t0 = 0, 0, 0.0, time.monotonic()
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            n = len(batch["id"])
            if not n:
                continue
            _record(summary, batch, names, ctor_kind)
            if ctor_kind != kind:  # the points no tile covers, in points_in_tiles
                batch["error"] = np.array(["no tile of the manifest covers this point"] * n, dtype=object)
            good = _good_rows(batch, ctor_kind)
            if good.any():
                sub = {k: v[good] for k, v in batch.items()}
                writer.write(to_table(sub, names))
                sample.add(sub)
                rows += int(good.sum())
            done += n if ctor_kind in ("points", "tiles") else len(set(batch["tile_id"].tolist()))
            now = time.monotonic()
            if stream is not None and now - last >= progress_every_s:
                last = now
                pct = f" ({100 * done / max(1, total):.0f}%)" if total else ""
                _log(stream, f"{what}: {done}/{total}{pct}, {rows} rows out, "
                             f"{done / max(1e-9, now - t0):.1f}/s")  # fmt: skip

    if kind == "points":
        consume(ray.data.from_arrow(points), "points", points.num_rows, "points", opts.batch_size)
    else:
        fs, _ = storage.resolve(opts.manifest, s3)
        ds = ray.data.read_parquet(plan.manifest_files, filesystem=fs, columns=list(schema.COLUMNS))
        total = len(points_by_tile) if points_by_tile is not None else len(tiles)
        consume(ds, "tiles", total, kind, opts.tile_batch_size)
        if kind == "points_in_tiles" and summary.outside:
            # Points no tile covers keep their location embedding; rs_embedding stays null.
            keep = pa.array([p[0] for p in summary.outside], pa.string())
            import pyarrow.compute as pc

            rest = points.filter(pc.is_in(points.column("id"), keep))
            consume(ray.data.from_arrow(rest), "points outside tiles", rest.num_rows, "points", opts.batch_size)
    summary.shards = writer.close()
    summary.rows = writer.rows_written
    summary.sample_lonlat, summary.sample_emb = sample.arrays()
    summary.seconds = time.monotonic() - start
    _log(stream, f"done: {summary.rows} rows in {len(summary.shards)} shard(s) -> {opts.out} "
                 f"({summary.seconds:.1f} s)")  # fmt: skip
    return summary


def _gpus_per_worker(opts: EmbedOptions) -> float:
    """The option, else one GPU per actor when the cluster has GPUs, else none."""
    import ray

    if opts.num_gpus_per_worker is not None:
        return float(opts.num_gpus_per_worker)
    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


def _good_rows(batch: dict[str, np.ndarray], kind: str) -> np.ndarray:
    """Rows worth writing: all, except the placeholder row of an unreadable tile in ``tiles``."""
    if kind == "tiles":
        return np.asarray(batch["rs_embedding_ok"], bool)
    return np.ones(len(batch["id"]), bool)


def _record(summary: EmbedSummary, batch: dict[str, np.ndarray], names: Sequence[str], kind: str) -> None:
    for i in np.flatnonzero(batch["error"].astype(bool)):
        summary.error_count += 1
        if kind == "tiles" and not batch["rs_embedding_ok"][i]:
            summary.bad_tiles.append((str(batch["tile_id"][i]), str(batch["error"][i])))
        elif len(summary.row_errors) < 1000:
            summary.row_errors.append((str(batch["id"][i]), str(batch["error"][i])))


class _Sample:
    """The first ``limit`` rows with a valid embedding of ``column``, for the map."""

    def __init__(self, limit: int, column: str) -> None:
        self.limit, self.column = limit, column
        self.lonlat: list[np.ndarray] = []
        self.emb: list[np.ndarray] = []
        self.n = 0

    def add(self, batch: dict[str, np.ndarray]) -> None:
        if self.n >= self.limit or self.column not in batch:
            return
        ok = np.flatnonzero(batch[self.column + "_ok"])[: self.limit - self.n]
        self.lonlat.append(np.stack([batch["lon"][ok], batch["lat"][ok]], axis=1))
        self.emb.append(np.asarray(batch[self.column][ok]))
        self.n += len(ok)

    def arrays(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        if not self.lonlat:
            return None, None
        return np.concatenate(self.lonlat), np.concatenate(self.emb)


def _log(stream: TextIO | None, text: str) -> None:
    if stream is not None:
        print(f"[embed] {text}", file=stream, flush=True)
