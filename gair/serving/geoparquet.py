"""GeoParquet output: WKB geometries, the ``geo`` file metadata (GeoParquet 1.1), sharded writing.

Written with pyarrow alone (no shapely/GDAL at run time). Geometry is WKB in a column
``geometry`` with CRS ``OGC:CRS84`` (WGS84 in (lon, lat) order) given as PROJJSON, so
GeoPandas (``read_parquet``), QGIS and DuckDB spatial read it as a layer. Embeddings are
``fixed_size_list<float32>[D]`` columns.
"""

from __future__ import annotations

import json
import posixpath
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from gair.data import storage

GEOPARQUET_VERSION = "1.1.0"
GEOMETRY_COLUMN = "geometry"
_WKB_POINT, _WKB_POLYGON = 1, 3


def wkb_points(lonlat_N2: np.ndarray) -> list[bytes]:
    """Little-endian WKB Points."""
    head = struct.pack("<BI", 1, _WKB_POINT)
    return [head + struct.pack("<2d", float(x), float(y)) for x, y in np.asarray(lonlat_N2, dtype=np.float64)]


def wkb_polygon(ring_R2: np.ndarray) -> bytes:
    """A little-endian WKB Polygon with one closed ring of (lon, lat)."""
    ring = np.asarray(ring_R2, dtype="<f8")
    return struct.pack("<BIII", 1, _WKB_POLYGON, 1, len(ring)) + ring.tobytes()


def parse_wkb_point(data: bytes) -> tuple[float, float]:
    """(x, y) of a WKB/EWKB Point (2D, Z or M: the first two ordinates)."""
    order = "<" if data[0] == 1 else ">"
    (kind,) = struct.unpack(order + "I", data[1:5])
    offset = 5
    if kind & 0x20000000:  # EWKB with an SRID
        offset += 4
    if (kind & 0xFFFF) % 1000 != _WKB_POINT:  # ISO (1001, 2001, 3001) and EWKB flag variants
        raise ValueError(f"geometry is not a Point (WKB type {kind})")
    return struct.unpack(order + "2d", data[offset : offset + 16])


def crs84_projjson() -> dict[str, Any]:
    from rasterio.crs import CRS

    return CRS.from_user_input("OGC:CRS84").to_dict(projjson=True)


def geo_metadata(geometry_types: Sequence[str], bbox: Sequence[float] | None = None) -> dict[str, Any]:
    column: dict[str, Any] = {
        "encoding": "WKB",
        "geometry_types": list(geometry_types),
        "crs": crs84_projjson(),
        "edges": "planar",
    }
    if bbox is not None:
        column["bbox"] = [float(v) for v in bbox]
    return {"version": GEOPARQUET_VERSION, "primary_column": GEOMETRY_COLUMN, "columns": {GEOMETRY_COLUMN: column}}


def embedding_array(values_ND: np.ndarray, valid_N: np.ndarray | None = None) -> pa.Array:
    """(N, D) float -> fixed_size_list<float32>[D]; rows not ``valid_N`` are all NaN.

    NaN, not null: pyarrow (25) writes null fixed-size-list entries to Parquet in a way it
    cannot read back ("Expected all lists to be of size=D"), so a missing embedding is a
    NaN vector and the row's ``error`` column says why.
    """
    values = np.array(values_ND, dtype=np.float32, copy=True)
    if valid_N is not None:
        values[~np.asarray(valid_N, bool)] = np.nan
    n, d = values.shape
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), d)


class GeoParquetWriter:
    """Tables in, ``part-00000.parquet``, ... out (``rows_per_shard`` rows each) under ``out_uri``.

    Every shard carries the ``geo`` metadata with its own bounding box.
    """

    def __init__(
        self,
        out_uri: str,
        geometry_types: Sequence[str],
        *,
        rows_per_shard: int = 100_000,
        overwrite: bool = False,
        s3: storage.S3Options | None = None,
    ) -> None:
        self.uri = out_uri
        self.geometry_types = list(geometry_types)
        self.rows_per_shard = rows_per_shard
        self.fs, self.path = storage.resolve(out_uri, s3)
        self._prepare(overwrite)
        self.shards: list[str] = []
        self.rows_written = 0
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self.schema: pa.Schema | None = None

    def _prepare(self, overwrite: bool) -> None:
        info = self.fs.get_file_info(self.path)
        if info.type == pafs.FileType.File:
            raise FileExistsError(f"{self.uri} is a file; --out must be a directory")
        if info.type == pafs.FileType.Directory:
            existing = [
                i.path for i in self.fs.get_file_info(pafs.FileSelector(self.path)) if i.path.endswith(".parquet")
            ]
            if existing and not overwrite:
                raise FileExistsError(f"{self.uri} already holds {len(existing)} Parquet files (use --overwrite)")
            for p in existing:
                self.fs.delete_file(p)
        self.fs.create_dir(self.path, recursive=True)

    def write(self, table: pa.Table) -> None:
        if self.schema is None:
            self.schema = table.schema
        self._pending.append(table.cast(self.schema))
        self._pending_rows += table.num_rows
        while self._pending_rows >= self.rows_per_shard:
            self._flush(self.rows_per_shard)

    def _flush(self, rows: int) -> None:
        table = pa.concat_tables(self._pending)
        shard, rest = table.slice(0, rows), table.slice(rows)
        self._pending, self._pending_rows = ([rest] if rest.num_rows else []), rest.num_rows
        self._write_shard(shard)

    def _write_shard(self, table: pa.Table) -> None:
        bbox = _bbox(table)
        meta = {b"geo": json.dumps(geo_metadata(self.geometry_types, bbox)).encode()}
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
        name = posixpath.join(self.path, f"part-{len(self.shards):05d}.parquet")
        pq.write_table(table, name, filesystem=self.fs, compression="zstd")
        self.shards.append(name)
        self.rows_written += table.num_rows

    def close(self) -> list[str]:
        """Write what is left (an empty shard if nothing was written, so readers see the schema)."""
        if self._pending_rows or (not self.shards and self.schema is not None):
            self._flush(self._pending_rows)
        return self.shards


def _bbox(table: pa.Table) -> list[float] | None:
    """[xmin, ymin, xmax, ymax] of the shard's geometries (as written by this module)."""
    coords = [_wkb_coords(b) for b in table.column(GEOMETRY_COLUMN).to_pylist() if b]
    if not coords:
        return None
    xy = np.concatenate(coords)
    return [float(xy[:, 0].min()), float(xy[:, 1].min()), float(xy[:, 0].max()), float(xy[:, 1].max())]


def _wkb_coords(data: bytes) -> np.ndarray:
    """Coordinates of a little-endian 2D WKB Point or single-ring Polygon."""
    (kind,) = struct.unpack("<I", data[1:5])
    if kind == _WKB_POINT:
        return np.frombuffer(data, "<f8", 2, 5).reshape(1, 2)
    (n,) = struct.unpack("<I", data[9:13])
    return np.frombuffer(data, "<f8", 2 * n, 13).reshape(n, 2)
