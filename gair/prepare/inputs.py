"""The inputs of tile preparation: a street-view table and a set of Sentinel-2 scenes.

Street views come from a CSV, Parquet or GeoParquet table (id, lon, lat, image path or
URI, optional capture time and heading). Scenes come from a STAC ItemCollection (read with
pystac; one asset per band, as Earth Search or Planetary Computer publish Sentinel-2 L2A)
or from a list of multi-band COGs. A :class:`Scene` is plain, picklable data: its CRS,
bounds in that CRS, acquisition time, scene-level cloud cover and where each band lives.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from gair.configs.prepare import StreetViewColumns
from gair.data import storage
from gair.data.manifest import band_names_for, read_table

SCL = "SCL"

# Manifest band name -> the names STAC catalogs give its asset (asset key, eo:bands name or common name).
BAND_ALIASES: dict[str, tuple[str, ...]] = {
    "B1": ("b01", "coastal"),
    "B2": ("b02", "blue"),
    "B3": ("b03", "green"),
    "B4": ("b04", "red"),
    "B5": ("b05", "rededge1", "rededge"),
    "B6": ("b06", "rededge2"),
    "B7": ("b07", "rededge3"),
    "B8": ("b08", "nir"),
    "B8A": ("b8a", "nir08", "nir narrow"),
    "B9": ("b09", "nir09", "water vapour"),
    "B10": ("b10", "cirrus"),
    "B11": ("b11", "swir16"),
    "B12": ("b12", "swir22"),
    SCL: ("scl",),
}
_ALIAS_TO_BAND = {alias: band for band, aliases in BAND_ALIASES.items() for alias in (band.lower(), *aliases)}


# -------------------------------------------------------------------- street views


@dataclass
class StreetViews:
    """Street views as columns (N rows); ``capture_time`` holds ISO strings or None."""

    ids: list[str]
    lonlat: np.ndarray  # (N, 2) float64 degrees
    images: list[str]
    capture_time: list[str | None]
    heading: list[float | None]

    def __len__(self) -> int:
        return len(self.ids)


def read_street_views(uri: str, columns: StreetViewColumns, s3: storage.S3Options | None = None) -> StreetViews:
    """Read the street-view table; relative image paths become absolute (relative to the table)."""
    table = read_table(uri, s3)
    names = table.column_names
    if columns.id not in names or columns.image not in names:
        raise ValueError(f"street-view table {uri} needs columns {columns.id!r} and {columns.image!r}; has {names}")
    if columns.lon in names and columns.lat in names:
        lon = _floats(table.column(columns.lon))
        lat = _floats(table.column(columns.lat))
    elif "geometry" in names:
        lon, lat = _points_from_wkb(table.column("geometry").to_pylist())
    else:
        raise ValueError(f"street-view table {uri} has neither {columns.lon!r}/{columns.lat!r} nor a geometry column")
    base = uri.rsplit("/", 1)[0] if storage.is_remote(uri) else os.path.dirname(os.path.abspath(uri))
    images = [_absolute(str(p), base) for p in table.column(columns.image).to_pylist()]
    times = _optional(table, columns.capture_time, lambda v: _iso(v))
    headings = _optional(table, columns.heading, lambda v: None if v is None else float(v))
    ids = [str(v) for v in table.column(columns.id).to_pylist()]
    if len(set(ids)) != len(ids):
        raise ValueError(f"street-view ids in {uri} are not unique")
    return StreetViews(ids, np.stack([lon, lat], axis=-1), images, times, headings)


def _floats(col: pa.ChunkedArray) -> np.ndarray:
    return np.array([math.nan if v is None else float(v) for v in col.to_pylist()], dtype=np.float64)


def _optional(table: pa.Table, name: str, conv) -> list:  # noqa: ANN001
    if not name or name not in table.column_names:
        return [None] * table.num_rows
    return [conv(v) for v in table.column(name).to_pylist()]


def _iso(v: Any) -> str | None:
    if v is None or v == "" or (isinstance(v, float) and math.isnan(v)):
        return None
    return v.isoformat() if isinstance(v, datetime) else str(v)


def _absolute(p: str, base: str) -> str:
    return p if storage.is_remote(p) or os.path.isabs(p) else storage.join(base, p)


def _points_from_wkb(values: Sequence[bytes | None]) -> tuple[np.ndarray, np.ndarray]:
    """(lon, lat) of GeoParquet point geometries (ISO WKB, 2D, lon/lat order of OGC:CRS84)."""
    lon, lat = np.full(len(values), np.nan), np.full(len(values), np.nan)
    for i, wkb in enumerate(values):
        if not wkb or len(wkb) < 21:
            continue
        order = "<" if wkb[0] == 1 else ">"
        (kind,) = struct.unpack(order + "I", wkb[1:5])
        if kind % 1000 == 1:  # Point (Z/M variants: lon, lat come first)
            lon[i], lat[i] = struct.unpack(order + "dd", wkb[5:21])
    return lon, lat


def parse_time(text: str | None) -> float | None:
    """Seconds since the epoch of an ISO 8601 string (``Z`` or offset; naive = UTC), or None."""
    if not text:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        from datetime import UTC

        t = t.replace(tzinfo=UTC)
    return t.timestamp()


# -------------------------------------------------------------------------- scenes


@dataclass(frozen=True)
class BandSource:
    """One band of a scene: a file and the 1-based band index inside it."""

    uri: str
    index: int = 1


@dataclass
class Scene:
    scene_id: str
    crs: str  # e.g. "EPSG:32633"
    bounds: tuple[float, float, float, float]  # (left, bottom, right, top) in crs
    bands: dict[str, BandSource]  # manifest band name (and "SCL") -> source
    datetime: str | None = None  # ISO 8601
    cloud_cover: float | None = None  # scene-level percentage (eo:cloud_cover)
    lonlat_bbox: tuple[float, float, float, float] = field(default=(-180.0, -90.0, 180.0, 90.0))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bands"] = {k: asdict(v) for k, v in self.bands.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Scene:
        d = dict(d)
        d["bands"] = {k: BandSource(**v) for k, v in d["bands"].items()}
        d["bounds"] = tuple(d["bounds"])
        d["lonlat_bbox"] = tuple(d["lonlat_bbox"])
        return cls(**d)


def band_for_asset(key: str, asset_fields: Mapping[str, Any]) -> str | None:
    """The manifest band an asset holds (by key, eo:bands name or common name), or None."""
    candidates = [key]
    for b in asset_fields.get("eo:bands") or asset_fields.get("bands") or []:
        candidates += [b.get("name") or "", b.get("common_name") or ""]
    for c in candidates:
        band = _ALIAS_TO_BAND.get(c.strip().lower())
        if band:
            return band
    return None


def scenes_from_stac(uri: str, s3: storage.S3Options | None = None) -> list[Scene]:
    """Scenes of a STAC ItemCollection (a JSON file or URI), read with pystac."""
    import pystac

    collection = pystac.ItemCollection.from_dict(json.loads(storage.read_bytes(uri, s3)))
    base = uri.rsplit("/", 1)[0] if storage.is_remote(uri) else os.path.dirname(os.path.abspath(uri))
    scenes = []
    for item in collection:
        bands: dict[str, BandSource] = {}
        for key, asset in item.assets.items():
            band = band_for_asset(key, asset.extra_fields)
            if band and (asset.media_type is None or "tiff" in asset.media_type.lower()):
                bands.setdefault(band, BandSource(_absolute(asset.href, base)))
        if not bands:
            continue
        crs, bounds = _stac_georeference(item)
        if crs is None or bounds is None:
            crs, bounds = _header_georeference(next(iter(bands.values())).uri, s3)
        cloud = item.properties.get("eo:cloud_cover")
        when = item.datetime.isoformat() if item.datetime else item.properties.get("start_datetime")
        scenes.append(
            Scene(
                item.id, crs, bounds, bands, when, None if cloud is None else float(cloud),
                tuple(item.bbox) if item.bbox else _lonlat_bbox(crs, bounds),
            )
        )  # fmt: skip
    return scenes


def _stac_georeference(item: Any) -> tuple[str | None, tuple[float, float, float, float] | None]:
    """CRS and bounds from the projection extension (``proj:epsg``/``proj:code`` + ``proj:bbox``)."""
    props = item.properties
    code = props.get("proj:code") or (f"EPSG:{props['proj:epsg']}" if props.get("proj:epsg") else None)
    bbox = props.get("proj:bbox")
    return (code, tuple(float(v) for v in bbox[:4])) if code and bbox and len(bbox) >= 4 else (None, None)


def _header_georeference(uri: str, s3: storage.S3Options | None) -> tuple[str, tuple[float, float, float, float]]:
    from gair.prepare.rangeio import ByteCounter, open_raster

    with open_raster(uri, ByteCounter(), s3) as src:
        if src.crs is None:
            raise ValueError(f"{uri} has no CRS")
        return src.crs.to_string(), tuple(src.bounds)


def _lonlat_bbox(crs: str, bounds: Sequence[float]) -> tuple[float, float, float, float]:
    from rasterio.warp import transform_bounds

    return tuple(transform_bounds(crs, "EPSG:4326", *bounds, densify_pts=21))


def scenes_from_cogs(uris: Sequence[str], s3: storage.S3Options | None = None) -> list[Scene]:
    """One scene per multi-band COG; band names from the descriptions (``SCL`` marks the classification)."""
    from gair.prepare.rangeio import ByteCounter, open_raster

    scenes = []
    for uri in uris:
        with open_raster(uri, ByteCounter(), s3) as src:
            if src.crs is None:
                raise ValueError(f"{uri} has no CRS")
            descriptions = [(_ALIAS_TO_BAND.get((d or "").strip().lower()) or d) for d in src.descriptions]
            names = band_names_for(src.count, descriptions)
            crs, bounds = src.crs.to_string(), tuple(src.bounds)
            when = src.tags().get("TIFFTAG_DATETIME") or src.tags().get("DATETIME")
        scene_id = uri.rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
        bands = {name: BandSource(uri, i + 1) for i, name in enumerate(names)}
        scenes.append(Scene(scene_id, crs, bounds, bands, _iso_or_none(when), None, _lonlat_bbox(crs, bounds)))
    if len({s.scene_id for s in scenes}) != len(scenes):
        for i, s in enumerate(scenes):
            s.scene_id = f"{i:05d}-{s.scene_id}"
    return scenes


def _iso_or_none(text: str | None) -> str | None:
    if not text:
        return None
    try:  # TIFF datetime: "YYYY:MM:DD HH:MM:SS"
        return datetime.strptime(text, "%Y:%m:%d %H:%M:%S").isoformat()
    except ValueError:
        return text if parse_time(text) is not None else None
