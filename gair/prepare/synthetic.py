"""Synthetic Sentinel-2 L2A scenes (one COG per band, a STAC ItemCollection) and street views.

For the tests, the benchmark and a demo of ``jobs/prepare_tiles.py`` without real data.
Every band is written at its native resolution (10, 20 or 60 m) as a real COG (internal
tiles, overviews). Pixel values encode the band and the position, so a test can check
band order, georeference and resampling of a cut tile against the scene:
``value = 1000 * (band index + 1) + (7 * row + 3 * col) % 500 + 1`` at the band's own grid.
The SCL band is 4 (vegetation) except in cloud boxes (9, cloud high probability) and
no-data boxes (0, where every band is 0 too).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from gair.data import decode, storage
from gair.prepare.inputs import SCL
from gair.sensors import S2_BANDS_12

Box = tuple[float, float, float, float]  # (left, bottom, right, top) in the scene's CRS

BAND_RESOLUTION = {
    "B1": 60, "B2": 10, "B3": 10, "B4": 10, "B5": 20, "B6": 20, "B7": 20, "B8": 10, "B8A": 20, "B9": 60,
    "B11": 20, "B12": 20, SCL: 20,
}  # fmt: skip
# Asset keys as Element 84's Earth Search names them (the other common style is "B02" ...).
EARTH_SEARCH_KEYS = {
    "B1": "coastal", "B2": "blue", "B3": "green", "B4": "red", "B5": "rededge1", "B6": "rededge2",
    "B7": "rededge3", "B8": "nir", "B8A": "nir08", "B9": "nir09", "B11": "swir16", "B12": "swir22", SCL: "scl",
}  # fmt: skip


@dataclass
class SceneSpec:
    scene_id: str
    epsg: int
    left: float  # multiples of 60 m keep every band's grid aligned, as in real products
    top: float
    size_m: float
    datetime: str  # ISO 8601
    cloud_cover: float  # scene-level percentage for the STAC item
    cloud_boxes: list[Box] = field(default_factory=list)
    nodata_boxes: list[Box] = field(default_factory=list)
    asset_style: str = "earth-search"  # or "B0x"
    noise: int = 0  # add uniform noise in [0, noise) to the bands: real scenes compress far less than a pattern

    @property
    def crs(self) -> str:
        return f"EPSG:{self.epsg}"

    @property
    def bounds(self) -> Box:
        return (self.left, self.top - self.size_m, self.left + self.size_m, self.top)


def band_value(band: str, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The synthetic value of ``band`` at pixel (row, col) of its own grid."""
    j = list(S2_BANDS_12).index(band)
    return (1000 * (j + 1) + (7 * rows + 3 * cols) % 500 + 1).astype(np.uint16)


def _box_mask(box: Box, spec: SceneSpec, res: float, shape: tuple[int, int]) -> np.ndarray:
    """Pixels whose centre lies inside ``box``."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    x = spec.left + (cols + 0.5) * res
    y = spec.top - (rows + 0.5) * res
    return (x >= box[0]) & (x < box[2]) & (y >= box[1]) & (y < box[3])


def band_array(spec: SceneSpec, band: str) -> np.ndarray:
    """(H, W) uint16 of one band at its native resolution, with clouds (SCL) and no-data applied."""
    res = BAND_RESOLUTION[band]
    n = int(round(spec.size_m / res))
    rows, cols = np.mgrid[0:n, 0:n]
    arr = np.full((n, n), 4, np.uint16) if band == SCL else band_value(band, rows, cols)
    if spec.noise and band != SCL:
        seed = [spec.epsg, int(spec.left), int(spec.top), list(BAND_RESOLUTION).index(band)]
        arr += np.random.default_rng(seed).integers(0, spec.noise, size=arr.shape, dtype=np.uint16)
    if band == SCL:
        for box in spec.cloud_boxes:
            arr[_box_mask(box, spec, res, arr.shape)] = 9
    for box in spec.nodata_boxes:
        arr[_box_mask(box, spec, res, arr.shape)] = 0
    return arr


def cog_bytes(arr: np.ndarray, crs: str, transform: Sequence[float], blocksize: int = 128, band: str = "") -> bytes:
    """A single-band COG (deflate, internal tiles of ``blocksize``, overviews when larger than a tile)."""
    from affine import Affine
    from rasterio.io import MemoryFile

    profile = {
        "driver": "COG", "width": arr.shape[1], "height": arr.shape[0], "count": 1, "dtype": arr.dtype.name,
        "crs": crs, "transform": Affine(*transform), "compress": "deflate", "blocksize": blocksize,
        "overview_resampling": "nearest",
    }  # fmt: skip
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(arr[None])
            if band:
                dst.set_band_description(1, band)
        return mem.read()


def write_scene(spec: SceneSpec, prefix: str, s3: storage.S3Options | None = None, blocksize: int = 128):  # noqa: ANN201
    """Write one COG per band under ``prefix/<scene id>/`` and return the scene's ``pystac.Item``."""
    import pystac
    from rasterio.warp import transform_bounds

    assets = {}
    for band, res in BAND_RESOLUTION.items():
        transform = (float(res), 0.0, spec.left, 0.0, -float(res), spec.top)
        uri = storage.join(prefix, spec.scene_id, f"{band}.tif")
        storage.write_bytes(uri, cog_bytes(band_array(spec, band), spec.crs, transform, blocksize, band), s3)
        key = EARTH_SEARCH_KEYS[band] if spec.asset_style == "earth-search" else _b0x(band)
        assets[key] = pystac.Asset(uri, media_type=pystac.MediaType.COG, roles=["data"])
    west, south, east, north = transform_bounds(spec.crs, "EPSG:4326", *spec.bounds, densify_pts=21)
    geometry = {
        "type": "Polygon",
        "coordinates": [[[west, south], [east, south], [east, north], [west, north], [west, south]]],
    }
    item = pystac.Item(
        spec.scene_id, geometry, [west, south, east, north], datetime.fromisoformat(spec.datetime),
        {"eo:cloud_cover": spec.cloud_cover, "proj:code": spec.crs, "proj:bbox": list(spec.bounds),
         "platform": "sentinel-2a", "constellation": "sentinel-2"},
    )  # fmt: skip
    for key, asset in assets.items():
        item.add_asset(key, asset)
    return item


def _b0x(band: str) -> str:
    return band if band in (SCL, "B8A") else f"B{int(band[1:]):02d}"


def write_item_collection(items: Sequence, uri: str, s3: storage.S3Options | None = None) -> str:
    """A STAC ItemCollection (GeoJSON FeatureCollection) of ``items`` at ``uri``."""
    import json

    import pystac

    storage.write_bytes(uri, json.dumps(pystac.ItemCollection(items).to_dict()).encode(), s3)
    return uri


def write_street_views(
    records: Sequence[dict], table_uri: str, s3: storage.S3Options | None = None, size: int = 32, seed: int = 0
) -> str:
    """A small JPEG per record (under ``images/`` beside the table) and the table (CSV).

    ``records``: dicts with ``id``, ``lon``, ``lat`` and optional ``capture_time``, ``heading``.
    The table's ``image`` column holds paths relative to the table.
    """
    rng = np.random.default_rng(seed)
    base = table_uri.rsplit("/", 1)[0]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["id", "lon", "lat", "image", "capture_time", "heading"])
    w.writeheader()
    for rec in records:
        rel = f"images/{rec['id']}.jpg"
        img = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
        storage.write_bytes(storage.join(base, rel), decode.encode_jpeg(img), s3)
        w.writerow({"id": rec["id"], "lon": rec["lon"], "lat": rec["lat"], "image": rel,
                    "capture_time": rec.get("capture_time") or "", "heading": rec.get("heading", "")})  # fmt: skip
    storage.write_bytes(table_uri, buf.getvalue().encode(), s3)
    return table_uri
