"""Writing, building and validating manifests (library code behind the ``jobs/`` drivers).

- :class:`ManifestWriter`: rows -> sharded Parquet (``part-00000.parquet``, ...) with row
  groups capped in bytes, so a reader streams a row group at a time.
- :func:`build_from_folders` (the reference layout) and :func:`build_from_table` (a CSV or
  Parquet table of SV, lon, lat, RS): read each tile's georeference, keep the
  observations inside it, reject the others with a reason.
- :func:`validate_manifest`: schema, decodability, coordinates and duplicate ids, as a
  :class:`ValidationReport`.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import math
import os
import posixpath
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from gair.data import decode, schema, storage
from gair.data.decode import BadRowError, Reason
from gair.sensors import S2_BANDS_10, S2_BANDS_12, S2_BANDS_13

# ------------------------------------------------------------------------ writing


class ManifestWriter:
    """Append rows; they land in Parquet shards of ``rows_per_shard`` rows under ``out_uri``.

    A row group is flushed when it reaches ``row_group_rows`` rows or ``row_group_bytes``
    of (mostly image) data, which bounds what a streaming reader holds per row group.
    Shards are named ``<name_prefix>NNNNN.parquet``; ``prepare=False`` leaves the directory
    as it is (several writers sharing one directory, each with its own prefix: the caller
    ran :func:`prepare_output` once).
    """

    def __init__(
        self,
        out_uri: str,
        *,
        rows_per_shard: int = 1024,
        row_group_rows: int = 256,
        row_group_bytes: int = 32 << 20,
        overwrite: bool = False,
        s3: storage.S3Options | None = None,
        name_prefix: str = "part-",
        prepare: bool = True,
    ) -> None:
        self.uri = out_uri
        self.name_prefix = name_prefix
        self.rows_per_shard = rows_per_shard
        self.row_group_rows = row_group_rows
        self.row_group_bytes = row_group_bytes
        self.fs, self.path = storage.resolve(out_uri, s3)
        if prepare:
            prepare_output(out_uri, overwrite, s3)
        self.rows_written = 0
        self.shards: list[str] = []
        self._writer: pq.ParquetWriter | None = None
        self._shard_rows = 0
        self._buffer: list[dict[str, Any]] = []
        self._buffer_bytes = 0

    def write(self, row: Mapping[str, Any]) -> None:
        self._buffer.append(dict(row))
        self._buffer_bytes += _row_bytes(row)
        if len(self._buffer) >= self.row_group_rows or self._buffer_bytes >= self.row_group_bytes:
            self._flush()

    def write_many(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            self.write(row)

    def _flush(self) -> None:
        while self._buffer:
            if self._writer is None:
                name = posixpath.join(self.path, f"{self.name_prefix}{len(self.shards):05d}.parquet")
                self._writer = pq.ParquetWriter(name, schema.MANIFEST_SCHEMA, filesystem=self.fs, compression="zstd")
                self.shards.append(name)
                self._shard_rows = 0
            take = min(len(self._buffer), self.rows_per_shard - self._shard_rows)
            table = pa.Table.from_pylist(self._buffer[:take], schema=schema.MANIFEST_SCHEMA)
            self._writer.write_table(table, row_group_size=take)
            self._buffer = self._buffer[take:]
            self._buffer_bytes = sum(_row_bytes(r) for r in self._buffer)
            self._shard_rows += take
            self.rows_written += take
            if self._shard_rows >= self.rows_per_shard:
                self._writer.close()
                self._writer = None

    def close(self) -> str:
        """Flush and close; returns the manifest URI."""
        self._flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        return self.uri

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def prepare_output(out_uri: str, overwrite: bool = False, s3: storage.S3Options | None = None) -> None:
    """Create the manifest directory; FileExistsError if it holds Parquet files (deleted with ``overwrite``)."""
    fs, path = storage.resolve(out_uri, s3)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        existing = [i.path for i in fs.get_file_info(pafs.FileSelector(path)) if i.path.endswith(".parquet")]
        if existing and not overwrite:
            raise FileExistsError(f"{out_uri} already holds {len(existing)} Parquet files (use overwrite)")
        for p in existing:
            fs.delete_file(p)
    fs.create_dir(path, recursive=True)


def _row_bytes(row: Mapping[str, Any]) -> int:
    n = len(row.get("rs_bytes") or b"")
    for o in row.get("observations") or ():
        n += len(o.get("sv_bytes") or b"") + 64
    return n + 256


def observation(
    obs_id: str,
    lonlat: tuple[float, float],
    *,
    sv_bytes: bytes | None = None,
    sv_uri: str | None = None,
    capture_time: str | None = None,
    heading: float | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An observation dict of the manifest schema."""
    return {
        "obs_id": obs_id, "sv_bytes": sv_bytes, "sv_uri": sv_uri, "lon": float(lonlat[0]), "lat": float(lonlat[1]),
        "capture_time": capture_time, "heading": heading, "meta_json": json.dumps(dict(meta)) if meta else None,
    }  # fmt: skip


def tile_row(
    tile_id: str,
    geo_info: decode.GeoInfo,
    band_names: Sequence[str],
    observations: Sequence[Mapping[str, Any]],
    *,
    rs_bytes: bytes | None = None,
    rs_uri: str | None = None,
) -> dict[str, Any]:
    """A manifest row (one RS tile and its observations)."""
    return {
        "tile_id": tile_id, "crs": geo_info.crs, "transform": list(geo_info.transform), "width": geo_info.width,
        "height": geo_info.height, "band_names": list(band_names), "rs_bytes": rs_bytes, "rs_uri": rs_uri,
        "observations": list(observations),
    }  # fmt: skip


# ----------------------------------------------------------------------- building


@dataclass
class BuildResult:
    manifest_uri: str
    tiles: int = 0
    observations: int = 0
    rejected: list[tuple[str, str, str]] = field(default_factory=list)  # (id, reason, detail)
    shards: list[str] = field(default_factory=list)  # paths inside the output filesystem

    def reasons(self) -> dict[str, int]:
        """Rejections counted by reason."""
        return count_reasons(self.rejected)


def count_reasons(rejected: Iterable[tuple[str, str, str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, reason, _ in rejected:
        counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items()))


@dataclass
class _TileJob:
    tile_id: str
    rs_uri: str
    candidates: list[dict[str, Any]]  # observation dicts (sv_uri, lon, lat, ...)


def band_names_for(count: int, descriptions: Sequence[str | None]) -> list[str]:
    """Band names of a tile: its band descriptions when they look like names, else Sentinel-2 defaults."""
    names = [d for d in descriptions if d]
    if len(names) == count and len(set(names)) == count and all(len(n) <= 8 for n in names):
        return names
    for defaults in (S2_BANDS_12, S2_BANDS_13):
        if count == len(defaults):
            return list(defaults)
    return [f"band{i + 1}" for i in range(count)]


def read_tile_header(uri: str, s3: storage.S3Options | None = None) -> tuple[decode.GeoInfo, list[str], bytes]:
    """(georeference, band names, file bytes) of a GeoTIFF."""
    from rasterio.io import MemoryFile

    data = storage.read_bytes(uri, s3)
    with decode.gdal_env(), MemoryFile(data) as mem, mem.open() as src:
        if src.crs is None:
            raise ValueError("GeoTIFF has no CRS")
        info = decode.GeoInfo(src.crs.to_string(), tuple(src.transform)[:6], src.width, src.height)
        names = band_names_for(src.count, src.descriptions)
    return info, names, data


def build_tile(job: _TileJob, inline: bool, s3: storage.S3Options | None) -> tuple[dict | None, list, list]:
    """(row or None, kept observation ids, rejections) for one tile."""
    try:
        info, names, data = read_tile_header(job.rs_uri, s3)
    except FileNotFoundError:
        return None, [], [(job.tile_id, Reason.RS_MISSING_FILE, f"{job.rs_uri} not found")]
    except Exception as exc:  # noqa: BLE001 - any unreadable tile is a rejection, not a crash
        return None, [], [(job.tile_id, Reason.RS_UNDECODABLE, f"{job.rs_uri}: {exc}")]
    kept, rejected = [], []
    for obs in job.candidates:
        try:
            decode.observation_xy([obs], info)
        except BadRowError as exc:
            rejected.append((exc.item_id, exc.reason, f"tile {job.tile_id}: {exc.detail}"))
            continue
        except Exception as exc:  # noqa: BLE001 - e.g. far outside the domain of the tile's UTM zone
            rejected.append((obs["obs_id"], Reason.OBS_OUTSIDE_TILE, f"tile {job.tile_id}: {exc}"))
            continue
        if inline and obs.get("sv_uri"):
            try:
                obs = {**obs, "sv_bytes": storage.read_bytes(obs["sv_uri"], s3), "sv_uri": None}
            except FileNotFoundError:
                rejected.append((obs["obs_id"], Reason.SV_MISSING_FILE, f"{obs['sv_uri']} not found"))
                continue
        kept.append(obs)
    row = tile_row(
        job.tile_id, info, names, kept, rs_bytes=data if inline else None, rs_uri=None if inline else job.rs_uri
    )
    return row, [o["obs_id"] for o in kept], rejected


class BuildTally:
    """Folds tile results (:func:`build_tile`) into counts and rejections, in the order given.

    A row is kept when it has observations; a rejection already seen (same id and reason)
    is not repeated; an observation kept by no tile and rejected for nothing else is
    ``obs_outside_tile`` (:meth:`finish`). The threaded builder folds the whole input in
    one tally, the Ray Data builder one per group of tiles (observation ids are unique
    across groups, so the two agree).
    """

    def __init__(self, rejected: Iterable[tuple[str, str, str]] = ()) -> None:
        self.tiles = 0
        self.observations = 0
        self.rejected: list[tuple[str, str, str]] = list(rejected)
        self._seen = {(r[0], r[1]) for r in self.rejected}
        self._assigned: set[str] = set()
        self._candidates: set[str] = set()

    def add(self, job: _TileJob, row: dict | None, kept: list[str], rejected: list) -> dict | None:
        """Count one tile's result; returns the row to write, or None."""
        self._candidates.update(o["obs_id"] for o in job.candidates)
        keep = row is not None and bool(row["observations"])
        if keep:
            self.tiles += 1
            self.observations += len(kept)
            self._assigned.update(kept)
        new = [r for r in rejected if r[1] != Reason.OBS_OUTSIDE_TILE and (r[0], r[1]) not in self._seen]
        self.rejected.extend(new)
        self._seen.update((r[0], r[1]) for r in new)
        return row if keep else None

    def finish(self) -> None:
        """Reject the observations that no tile of their group took (groups may hold several tiles)."""
        outside = sorted(self._candidates - self._assigned - {r[0] for r in self.rejected})
        self.rejected.extend((o, Reason.OBS_OUTSIDE_TILE, "outside every tile of its group") for o in outside)


def _run_builds(
    jobs: Sequence[_TileJob],
    out_uri: str,
    *,
    inline: bool,
    workers: int,
    s3: storage.S3Options | None,
    writer_kwargs: Mapping[str, Any],
    log: TextIO | None,
    pre_rejected: list[tuple[str, str, str]],
) -> BuildResult:
    tally = BuildTally(pre_rejected)
    progress = Progress("build", len(jobs), log)
    with ManifestWriter(out_uri, s3=s3, **writer_kwargs) as writer, cf.ThreadPoolExecutor(max(1, workers)) as pool:
        # Threads: the work is I/O and GDAL/zlib decoding, which release the GIL.
        for job, (row, kept, rejected) in zip(jobs, pool.map(lambda j: build_tile(j, inline, s3), jobs)):
            row = tally.add(job, row, kept, rejected)
            if row is not None:
                writer.write(row)
            progress.step(f"{tally.tiles} tiles, {tally.observations} obs kept")
    tally.finish()
    progress.done(f"{tally.tiles} tiles, {tally.observations} obs, {len(tally.rejected)} rejected")
    return BuildResult(out_uri, tally.tiles, tally.observations, tally.rejected, list(writer.shards))


@dataclass
class FolderPlan:
    """The reference layout, listed (no file read yet): what both builders work from."""

    groups: dict[str, list[tuple[str, str, str]]]  # group -> (uuid, SV URI, metadata URI), in listing order
    tiles: dict[str, list[tuple[str, str]]]  # group -> (tile id, RS URI), by path
    rejected: list[tuple[str, str, str]]  # street views without metadata, groups without an RS tile


def plan_folders(root: str, s3: storage.S3Options | None = None) -> FolderPlan:
    """List ``images/<group>/<uuid>.jpg``, ``rs_data/<group>/*.tif`` and ``image_meta_data/<uuid>.json``."""
    fs, base = storage.resolve(root, s3)
    if fs.get_file_info(base).type != pafs.FileType.Directory:
        raise FileNotFoundError(f"{root} is not a directory")
    files = [i.path for i in fs.get_file_info(pafs.FileSelector(base, recursive=True)) if i.type == pafs.FileType.File]
    rel = [posixpath.relpath(p, base) for p in files]
    to_uri = (lambda r: storage.join(root, r)) if storage.is_remote(root) else (lambda r: os.path.join(base, r))
    metas = {
        posixpath.splitext(posixpath.basename(r))[0]: r
        for r in rel
        if r.startswith("image_meta_data/") and r.endswith(".json")
    }
    groups: dict[str, list[tuple[str, str, str]]] = {}
    rejected: list[tuple[str, str, str]] = []
    for r in rel:
        parts = r.split("/")
        if len(parts) != 3 or parts[0] != "images" or not parts[2].lower().endswith((".jpg", ".jpeg", ".png")):
            continue
        uuid = posixpath.splitext(parts[2])[0]
        if uuid not in metas:
            rejected.append((uuid, "missing_metadata", f"no image_meta_data/{uuid}.json"))
            continue
        groups.setdefault(parts[1], []).append((uuid, to_uri(r), to_uri(metas[uuid])))
    tiles: dict[str, list[tuple[str, str]]] = {}
    for r in sorted(rel):
        parts = r.split("/")
        if len(parts) == 3 and parts[0] == "rs_data" and parts[2].lower().endswith((".tif", ".tiff")):
            tiles.setdefault(parts[1], []).append((f"{parts[1]}/{posixpath.splitext(parts[2])[0]}", to_uri(r)))
    for g, svs in groups.items():
        if g not in tiles:
            rejected.extend((uuid, Reason.OBS_OUTSIDE_TILE, f"group {g} has no RS tile") for uuid, _, _ in svs)
    return FolderPlan(groups, tiles, rejected)


def folder_observation(uuid: str, sv_uri: str, meta_uri: str, s3: storage.S3Options | None = None) -> dict[str, Any]:
    """The observation of one street view of the reference layout (reads its metadata JSON)."""
    meta = json.loads(storage.read_bytes(meta_uri, s3))
    extra = {k: v for k, v in meta.items() if k not in ("lon", "lat")}
    return observation(uuid, (_float(meta.get("lon")), _float(meta.get("lat"))), sv_uri=sv_uri, meta=extra or None)


def group_jobs(tiles: Sequence[tuple[str, str]], candidates: list[dict[str, Any]]) -> list[_TileJob]:
    """The tile jobs of one group of (tile id, RS URI): every tile gets all the group's observations."""
    return [_TileJob(tile_id, rs_uri, candidates) for tile_id, rs_uri in tiles]


def build_from_folders(
    root: str,
    out_uri: str,
    *,
    inline: bool = True,
    workers: int = 8,
    s3: storage.S3Options | None = None,
    writer_kwargs: Mapping[str, Any] | None = None,
    log: TextIO | None = sys.stderr,
) -> BuildResult:
    """Build a manifest from the reference layout under ``root``.

    ``images/<group>/<uuid>.jpg``, ``rs_data/<group>/*.tif``, ``image_meta_data/<uuid>.json``
    (with ``lon``, ``lat``). Every tile of a group gets the group's observations that lie
    inside it; an observation inside none is rejected (``obs_outside_tile``).
    """
    plan = plan_folders(root, s3)
    jobs = []
    for group in sorted(plan.tiles):
        candidates = [folder_observation(*sv, s3) for sv in plan.groups.get(group, [])]
        jobs.extend(group_jobs(plan.tiles[group], candidates))
    jobs.sort(key=lambda j: j.rs_uri)  # the listing's order
    return _run_builds(
        jobs, out_uri, inline=inline, workers=workers, s3=s3, writer_kwargs=writer_kwargs or {}, log=log,
        pre_rejected=plan.rejected,
    )  # fmt: skip


def read_table(uri: str, s3: storage.S3Options | None = None) -> pa.Table:
    """A CSV or Parquet table (by extension)."""
    fs, path = storage.resolve(uri, s3)
    if path.lower().endswith((".parquet", ".pq")):
        return pq.read_table(path, filesystem=fs)
    with fs.open_input_stream(path) as f:
        return pacsv.read_csv(f)


def table_jobs(
    table_uri: str, s3: storage.S3Options | None = None, columns: Mapping[str, str] | None = None
) -> list[_TileJob]:
    """One job per RS tile of a table of pairs (see :func:`build_from_table`); SchemaError if columns lack."""
    names = {"sv": "sv", "lon": "lon", "lat": "lat", "rs": "rs", **(columns or {})}
    table = read_table(table_uri, s3)
    missing = [v for v in (names["sv"], names["lon"], names["lat"], names["rs"]) if v not in table.column_names]
    if missing:
        raise schema.SchemaError(f"table {table_uri} lacks columns {missing} (has {table.column_names})")
    base = table_uri.rsplit("/", 1)[0] if storage.is_remote(table_uri) else os.path.dirname(os.path.abspath(table_uri))

    def absolute(p: str) -> str:
        return p if storage.is_remote(p) or os.path.isabs(p) else storage.join(base, p)

    by_tile: dict[str, list[dict]] = {}
    used: dict[str, int] = {}
    for rec in table.to_pylist():
        sv = absolute(str(rec[names["sv"]]))
        obs_id = str(rec.get("obs_id") or posixpath.splitext(posixpath.basename(sv))[0])
        used[obs_id] = used.get(obs_id, 0) + 1
        if used[obs_id] > 1:  # the same image at another place/tile: keep ids unique
            obs_id = f"{obs_id}#{used[obs_id] - 1}"
        heading = rec.get("heading")
        obs = observation(
            obs_id, (_float(rec.get(names["lon"])), _float(rec.get(names["lat"]))), sv_uri=sv,
            capture_time=str(rec["capture_time"]) if rec.get("capture_time") is not None else None,
            heading=float(heading) if heading is not None else None,
        )  # fmt: skip
        by_tile.setdefault(absolute(str(rec[names["rs"]])), []).append(obs)
    return [_TileJob(_tile_id_from_uri(rs), rs, obs) for rs, obs in by_tile.items()]


def build_from_table(
    table_uri: str,
    out_uri: str,
    *,
    inline: bool = True,
    workers: int = 8,
    s3: storage.S3Options | None = None,
    writer_kwargs: Mapping[str, Any] | None = None,
    log: TextIO | None = sys.stderr,
    columns: Mapping[str, str] | None = None,
) -> BuildResult:
    """Build a manifest from a table with columns ``sv``, ``lon``, ``lat``, ``rs`` (paths or URIs).

    Optional columns: ``obs_id`` (default: the SV file name), ``capture_time``, ``heading``.
    ``columns`` renames, e.g. ``{"sv": "image_path"}``. Relative paths are relative to the
    table's folder.
    """
    jobs = table_jobs(table_uri, s3, columns)
    return _run_builds(
        jobs, out_uri, inline=inline, workers=workers, s3=s3, writer_kwargs=writer_kwargs or {}, log=log,
        pre_rejected=[],
    )  # fmt: skip


def _tile_id_from_uri(uri: str) -> str:
    parts = uri.rstrip("/").split("/")
    return "/".join(parts[-2:]).rsplit(".", 1)[0]


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


# --------------------------------------------------------------------- validating


@dataclass
class ValidationReport:
    """What :func:`validate_manifest` found. ``fatal`` set: the input is unusable (exit 2)."""

    uri: str
    tiles: int = 0
    observations: int = 0
    bad: list[tuple[str, str, str]] = field(default_factory=list)  # (id, reason, detail)
    fatal: str | None = None

    @property
    def exit_code(self) -> int:
        return 2 if self.fatal else (1 if self.bad else 0)

    def reasons(self) -> dict[str, int]:
        return count_reasons(self.bad)

    def write_report(self, path: str) -> None:
        """CSV with columns id, reason, detail (one line per problem)."""
        import csv

        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "reason", "detail"])
            if self.fatal:
                w.writerow([self.uri, "unusable_input", self.fatal])
            w.writerows(self.bad)


def check_row(
    row: Mapping[str, Any],
    *,
    decode_images: bool = True,
    required_bands: Sequence[str] = S2_BANDS_10,
    s3: storage.S3Options | None = None,
    max_nodata_fraction: float = 0.5,
) -> list[BadRowError]:
    """Every problem of one manifest row (tile-level and per observation)."""
    problems: list[BadRowError] = []
    try:
        info = decode.check_georeference(row)
    except BadRowError as exc:
        return [exc]
    missing = [b for b in required_bands if b not in (row.get("band_names") or [])]
    if missing:
        problems.append(BadRowError(Reason.RS_MISSING_BAND, str(row.get("tile_id")), f"bands {missing} not in tile"))
    if decode_images:
        try:
            image, embedded = decode.read_rs(row, info, s3)
            decode.fill_nodata(image, embedded.nodata, max_nodata_fraction, str(row.get("tile_id")))
        except BadRowError as exc:
            problems.append(exc)
    for obs in row.get("observations") or []:
        try:
            decode.observation_xy([obs], info)
            if decode_images:
                decode.decode_sv(obs, s3)
        except BadRowError as exc:
            problems.append(exc)
    return problems


def iter_manifest_rows(
    uri: str, s3: storage.S3Options | None = None, batch_rows: int = 32
) -> Iterator[list[dict[str, Any]]]:
    """Rows of a manifest in small lists, one row group's worth at most (streaming, bounded memory).

    Raises SchemaError for a file that is not Parquet or not a manifest.
    """
    fs, _ = storage.resolve(uri, s3)
    for path in manifest_files(uri, s3):
        pf = open_manifest_file(fs, path)
        for rg in range(pf.num_row_groups):
            yield from iter_row_group(pf, path, rg, batch_rows)


def manifest_files(uri: str, s3: storage.S3Options | None = None) -> list[str]:
    """The Parquet files of a manifest (sorted); FileNotFoundError when there are none."""
    files = storage.list_parquet(uri, s3)
    if not files:
        raise FileNotFoundError(f"{uri} holds no .parquet files")
    return files


def open_manifest_file(fs: pafs.FileSystem, path: str) -> pq.ParquetFile:
    """One manifest shard, its schema checked; SchemaError when it is not Parquet or not a manifest."""
    try:
        pf = pq.ParquetFile(fs.open_input_file(path))
    except (pa.ArrowInvalid, OSError) as exc:
        raise schema.SchemaError(f"{path} is not a Parquet file: {exc}") from exc
    problems = schema.schema_problems(pf.schema_arrow)
    if problems:
        raise schema.SchemaError(f"{path}: " + "; ".join(problems))
    return pf


def iter_row_group(pf: pq.ParquetFile, path: str, rg: int, batch_rows: int = 32) -> Iterator[list[dict[str, Any]]]:
    """The rows of one row group in lists of ``batch_rows``; SchemaError when its pages cannot be read."""
    try:
        for batch in pf.iter_batches(batch_size=batch_rows, row_groups=[rg], columns=list(schema.COLUMNS)):
            yield batch.to_pylist()
    except (pa.ArrowInvalid, OSError) as exc:
        raise schema.SchemaError(f"{path}: row group {rg} cannot be read: {exc}") from exc


def validate_manifest(
    uri: str,
    *,
    decode_images: bool = True,
    required_bands: Sequence[str] = S2_BANDS_10,
    workers: int = 4,
    s3: storage.S3Options | None = None,
    log: TextIO | None = None,
) -> ValidationReport:
    """Check a manifest: schema, georeference, decodability, coordinates, duplicate ids."""
    report = ValidationReport(uri)
    tile_ids: set[str] = set()
    obs_ids: set[str] = set()
    progress = Progress("validate", None, log)
    try:
        with cf.ThreadPoolExecutor(max(1, workers)) as pool:
            for rows in iter_manifest_rows(uri, s3):
                checks = pool.map(
                    lambda r: check_row(r, decode_images=decode_images, required_bands=required_bands, s3=s3), rows
                )
                for row, problems in zip(rows, checks, strict=True):
                    _check_ids(row, tile_ids, obs_ids, report)
                    report.bad.extend((p.item_id, p.reason, p.detail) for p in problems)
                    report.tiles += 1
                    report.observations += len(row.get("observations") or [])
                    progress.step(f"{report.tiles} tiles, {len(report.bad)} problems")
    except (schema.SchemaError, FileNotFoundError) as exc:
        report.fatal = str(exc)
    progress.done(f"{report.tiles} tiles, {report.observations} obs, {len(report.bad)} problems")
    return report


def _check_ids(row: Mapping[str, Any], tile_ids: set[str], obs_ids: set[str], report: ValidationReport) -> None:
    tid = str(row.get("tile_id"))
    if tid in tile_ids:
        report.bad.append((tid, Reason.DUPLICATE_TILE_ID, "tile id seen before"))
    tile_ids.add(tid)
    for obs in row.get("observations") or []:
        oid = str(obs.get("obs_id"))
        if oid in obs_ids:
            report.bad.append((oid, Reason.DUPLICATE_OBS_ID, f"observation id seen before (tile {tid})"))
        obs_ids.add(oid)


# ----------------------------------------------------------------------- progress


class Progress:
    """Rate-limited progress lines on a stream (at most one every ``every_s`` seconds)."""

    def __init__(self, what: str, total: int | None, stream: TextIO | None, every_s: float = 2.0) -> None:
        self.what, self.total, self.stream, self.every_s = what, total, stream, every_s
        self.n = 0
        self.start = self.last = time.monotonic()

    def step(self, note: str = "") -> None:
        self.n += 1
        now = time.monotonic()
        if self.stream is not None and now - self.last >= self.every_s:
            self.last = now
            self._print(note)

    def _print(self, note: str) -> None:
        of = f"/{self.total} ({100 * self.n / max(1, self.total):.0f}%)" if self.total else ""
        rate = self.n / max(1e-9, time.monotonic() - self.start)
        print(f"[{self.what}] {self.n}{of} {rate:.1f}/s {note}", file=self.stream, flush=True)

    def done(self, note: str = "") -> None:
        if self.stream is not None:
            self._print("done: " + note)
