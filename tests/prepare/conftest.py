"""Fixtures of the tile-preparation tests: synthetic Sentinel-2 scenes (COGs + STAC) and street views.

The scenario, on 1 km cells (100 x 100 px tiles):

- UTM zone 32N: scenes A (2024-06-01, 5 % scene cloud, a cloud box over cell (500, 4998))
  and B (2024-06-20, 20 %, a cloud box over cell (501, 4998)) over the same 3.6 km square;
- UTM zone 33N: scene C (2024-06-05) with a 1.1 km no-data strip on its west edge (30 % of
  cell (500, 4999)) and a cloud box over cell (501, 4999);
- street views in cells chosen so that every rule decides one cell (``EXPECTED``), one
  street view outside every scene and one without a latitude.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np
import pytest

from gair.data import storage
from gair.prepare import synthetic

CELL_M = 1000.0
LEFT, TOP, SIZE = 499200.0, 5000400.0, 3600.0
TIME_NEAR_B = "2024-06-19T09:00:00Z"


def _cell_box(ix: int, iy: int) -> tuple[float, float, float, float]:
    return (ix * CELL_M, iy * CELL_M, (ix + 1) * CELL_M, (iy + 1) * CELL_M)


SCENES = [
    synthetic.SceneSpec("S2A_32_20240601", 32632, LEFT, TOP, SIZE, "2024-06-01T10:30:00+00:00", 5.0,
                        cloud_boxes=[_cell_box(500, 4998)]),
    synthetic.SceneSpec("S2B_32_20240620", 32632, LEFT, TOP, SIZE, "2024-06-20T10:30:00+00:00", 20.0,
                        cloud_boxes=[_cell_box(501, 4998)], asset_style="B0x"),
    synthetic.SceneSpec("S2A_33_20240605", 32633, LEFT, TOP, SIZE, "2024-06-05T10:30:00+00:00", 10.0,
                        cloud_boxes=[_cell_box(501, 4999)], nodata_boxes=[(LEFT, TOP - SIZE, 500300.0, TOP)]),
]  # fmt: skip

# cell id -> (EPSG, ix, iy, street views, capture time, expected scene or rejection reason)
EXPECTED = {
    "32632_1000m_500_4999": (32632, 500, 4999, 3, TIME_NEAR_B, "S2B_32_20240620"),  # both clear: nearest in time
    "32632_1000m_501_4999": (32632, 501, 4999, 3, None, "S2A_32_20240601"),  # both clear, no time: less scene cloud
    "32632_1000m_500_4998": (32632, 500, 4998, 2, None, "S2B_32_20240620"),  # A cloudy here
    "32632_1000m_501_4998": (32632, 501, 4998, 2, "2024-06-21T09:00:00Z", "S2A_32_20240601"),  # B cloudy here
    "32632_1000m_500_4997": (32632, 500, 4997, 1, None, "too_few_obs"),
    "32633_1000m_500_4999": (32633, 500, 4999, 2, None, "nodata"),
    "32633_1000m_501_4999": (32633, 501, 4999, 2, None, "cloudy"),
    "32633_1000m_501_4998": (32633, 501, 4998, 2, None, "S2A_33_20240605"),
}
OFFSETS = [(0.2537, 0.3042), (0.7071, 0.8066), (0.5013, 0.5577)]  # fractions of their cell, off pixel edges
MIN_OBS = 2


@dataclass
class Scenario:
    root: str  # s3://bucket/...
    stac: str
    street_views: str
    sv_cells: dict[str, str]  # street-view id -> cell id


def street_view_records() -> tuple[list[dict], dict[str, str]]:
    from rasterio.warp import transform as warp_transform

    records, cells = [], {}
    for cell_id, (epsg, ix, iy, n, when, _) in EXPECTED.items():
        xs = [(ix + fx) * CELL_M for fx, _ in OFFSETS[:n]]
        ys = [(iy + fy) * CELL_M for _, fy in OFFSETS[:n]]
        lons, lats = warp_transform(f"EPSG:{epsg}", "EPSG:4326", xs, ys)
        for k, (lon, lat) in enumerate(zip(lons, lats)):
            sv_id = f"sv-{cell_id}-{k}"
            records.append({"id": sv_id, "lon": lon, "lat": lat, "capture_time": when, "heading": 90.0 * k})
            cells[sv_id] = cell_id
    records.append({"id": "sv-nowhere", "lon": 0.5, "lat": 0.5, "heading": 0.0})
    records.append({"id": "sv-nolat", "lon": 9.0, "lat": "", "heading": 0.0})
    return records, cells


def write_scenario(root: str, s3: storage.S3Options | None = None) -> Scenario:
    items = [synthetic.write_scene(spec, storage.join(root, "scenes"), s3) for spec in SCENES]
    stac = synthetic.write_item_collection(items, storage.join(root, "scenes", "items.json"), s3)
    records, cells = street_view_records()
    table = synthetic.write_street_views(records, storage.join(root, "sv", "street_views.csv"), s3)
    return Scenario(root, stac, table, cells)


@pytest.fixture(scope="session")
def s2_scenario(s3_server: str) -> Scenario:
    """The scenario on the S3 server (a bucket of its own)."""
    import boto3

    bucket = f"gair-prepare-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
    return write_scenario(f"s3://{bucket}/input")


def scene_spec(scene_id: str) -> synthetic.SceneSpec:
    return next(s for s in SCENES if s.scene_id == scene_id)


def scene_values_at(spec: synthetic.SceneSpec, band: str, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """The synthetic scene's value of ``band`` at CRS points (nearest pixel of the band's own grid)."""
    res = synthetic.BAND_RESOLUTION[band]
    cols = np.floor((xs - spec.left) / res).astype(int)
    rows = np.floor((spec.top - ys) / res).astype(int)
    return synthetic.band_value(band, rows, cols)
