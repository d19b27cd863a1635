"""Reading the inputs: a STAC ItemCollection with pystac, street-view tables (CSV, GeoParquet)."""

from __future__ import annotations

import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gair.configs.prepare import StreetViewColumns
from gair.prepare import inputs
from gair.prepare.synthetic import BAND_RESOLUTION
from tests.prepare.conftest import SCENES, Scenario


def test_stac_item_collection_gives_scenes_with_every_band(s2_scenario: Scenario):
    scenes = {s.scene_id: s for s in inputs.scenes_from_stac(s2_scenario.stac)}
    assert sorted(scenes) == sorted(s.scene_id for s in SCENES)
    for spec in SCENES:  # both asset naming styles (Earth Search "blue", "B02") map to the same bands
        scene = scenes[spec.scene_id]
        assert set(scene.bands) == set(BAND_RESOLUTION)
        assert scene.bands["B8A"].uri.endswith(f"{spec.scene_id}/B8A.tif")
        assert scene.crs == spec.crs and scene.bounds == spec.bounds
        assert scene.cloud_cover == spec.cloud_cover and scene.datetime.startswith(spec.datetime[:19])


def test_street_views_from_csv(s2_scenario: Scenario):
    sv = inputs.read_street_views(s2_scenario.street_views, StreetViewColumns())
    i = sv.ids.index("sv-nolat")
    assert np.isnan(sv.lonlat[i, 1])
    assert all(p.startswith("s3://") and p.endswith(".jpg") for p in sv.images)
    when = sv.capture_time[sv.ids.index("sv-32632_1000m_500_4999-0")]  # CSV readers may parse it: compare instants
    assert inputs.parse_time(when) == inputs.parse_time("2024-06-19T09:00:00Z")


def test_street_views_from_geoparquet_points(tmp_path):
    wkb = [struct.pack("<BIdd", 1, 1, 9.5, 45.25), struct.pack(">BIdd", 0, 1, -70.0, -33.5)]
    table = pa.table({"sv_id": ["a", "b"], "geometry": pa.array(wkb, pa.binary()), "path": ["a.jpg", "s3://b/b.jpg"]})
    pq.write_table(table, tmp_path / "sv.parquet")
    sv = inputs.read_street_views(str(tmp_path / "sv.parquet"), StreetViewColumns(id="sv_id", image="path"))
    np.testing.assert_array_equal(sv.lonlat, [[9.5, 45.25], [-70.0, -33.5]])
    assert sv.images == [str(tmp_path / "a.jpg"), "s3://b/b.jpg"]
    assert sv.capture_time == [None, None]
