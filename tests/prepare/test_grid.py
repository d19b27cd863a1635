"""Street views -> cells on the scenes' UTM grids (no I/O: scenes described in memory)."""

from __future__ import annotations

import numpy as np

from gair.prepare import grid
from gair.prepare.inputs import BandSource, Scene
from tests.prepare.conftest import EXPECTED, SCENES, street_view_records


def _scenes() -> list[Scene]:
    from rasterio.warp import transform_bounds

    return [
        Scene(s.scene_id, s.crs, s.bounds, {"B2": BandSource("unused")}, s.datetime, s.cloud_cover,
              tuple(transform_bounds(s.crs, "EPSG:4326", *s.bounds, densify_pts=21)))
        for s in SCENES
    ]  # fmt: skip


def test_utm_zones_north_and_south():
    zones = grid.utm_crs(np.array([[9.0, 45.0], [15.2, 45.0], [-179.9, -10.0], [179.9, 10.0], [3.0, -33.0]]))
    assert zones == ["EPSG:32632", "EPSG:32633", "EPSG:32701", "EPSG:32660", "EPSG:32731"]


def test_street_views_group_into_the_cells_that_contain_them():
    records, sv_cells = street_view_records()
    records = [r for r in records if r["lat"] != ""]
    lonlat = np.array([[r["lon"], r["lat"]] for r in records], dtype=np.float64)
    cells, uncovered = grid.assign_cells(lonlat, _scenes(), 1000.0)
    assert [records[i]["id"] for i in uncovered] == ["sv-nowhere"]
    assert sorted(c.cell_id for c in cells) == sorted(EXPECTED)  # two UTM zones
    for cell in cells:
        assert {records[i]["id"] for i in cell.obs} == {s for s, c in sv_cells.items() if c == cell.cell_id}
        left, bottom, right, top = cell.bounds
        assert right - left == top - bottom == 1000.0 and left % 1000 == 0 and bottom % 1000 == 0
        expected_scenes = {s.scene_id for s in SCENES if s.crs == cell.crs}
        assert set(cell.scene_ids) == expected_scenes  # only scenes of the cell's own CRS
