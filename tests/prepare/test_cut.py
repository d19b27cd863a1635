"""Cutting cells out of the real Sentinel-2 tiles in ../shared/data/satclip-s2 (12 bands, 10 m, UTM)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gair.configs.prepare import PrepareConfig
from gair.data import decode
from gair.prepare import inputs, rangeio
from gair.prepare.cut import CutOptions, Reject, cut_cell, observation_dict


@pytest.fixture(scope="module")
def real_scene(shared_data: Path) -> tuple[Path, inputs.Scene]:
    path = sorted((shared_data / "satclip-s2" / "images").glob("*.tif"))[0]
    return path, inputs.scenes_from_cogs([str(path)])[0]


def _cut(scene: inputs.Scene, ix: int, iy: int, tmp_path: Path, **overrides):
    cfg = PrepareConfig(street_views="unused", cogs=["unused"], out=str(tmp_path), tile_size_m=1000, **overrides)
    from rasterio.warp import transform as warp_transform

    lon, lat = warp_transform(scene.crs, "EPSG:4326", [ix * 1000 + 500], [iy * 1000 + 500])
    cell = {
        "cell_id": f"c{ix}_{iy}", "crs": scene.crs, "bounds": [ix * 1000, iy * 1000, (ix + 1) * 1000, (iy + 1) * 1000],
        "observations": [observation_dict("o1", (lon[0], lat[0]), "sv/o1.jpg", None, None)],
        "scene_ids": [scene.scene_id],
    }  # fmt: skip
    counter = rangeio.ByteCounter()
    return cut_cell(cell, {scene.scene_id: scene}, CutOptions.from_config(cfg), counter), counter


def test_real_tile_cell_is_the_bilinear_resampling_of_the_scene(real_scene, tmp_path):
    import rasterio

    path, scene = real_scene
    assert scene.crs.startswith("EPSG:32") and list(scene.bands)[:3] == ["B1", "B2", "B3"]
    left, bottom = scene.bounds[:2]
    ix, iy = int(np.ceil(left / 1000)), int(np.ceil(bottom / 1000))  # a cell fully inside the 2.56 km tile
    result, counter = _cut(scene, ix, iy, tmp_path)
    assert result.rejects == [] and result.scene_id == scene.scene_id
    image, info = decode.decode_geotiff(result.row["rs_bytes"])
    assert info.crs == scene.crs and info.transform == (10.0, 0.0, ix * 1000.0, 0.0, -10.0, (iy + 1) * 1000.0)
    assert result.row["observations"][0]["sv_uri"] == "sv/o1.jpg" and "image" not in result.row["observations"][0]
    with rasterio.open(path) as src:
        scene_px = src.read().astype(np.float64)
        # The SSL4EO grid is offset by half a pixel from the 10 m UTM grid: each output pixel
        # centre sits on a corner shared by four scene pixels, so bilinear is their mean.
        c0 = (ix * 1000 - src.transform.c) / 10 - 0.5
        r0 = (src.transform.f - (iy + 1) * 1000) / 10 - 0.5
        assert c0 % 1 == 0 and r0 % 1 == 0
        block = scene_px[:, int(r0) : int(r0) + 101, int(c0) : int(c0) + 101]
    mean4 = (block[:, :-1, :-1] + block[:, 1:, :-1] + block[:, :-1, 1:] + block[:, 1:, 1:]) / 4
    assert np.abs(image - mean4).max() <= 0.5  # uint16 rounding
    assert 0 < counter.bytes <= path.stat().st_size


def test_cell_over_the_scene_edge_is_rejected_as_nodata(real_scene, tmp_path):
    _, scene = real_scene
    left, bottom = scene.bounds[:2]
    result, _ = _cut(scene, int(np.floor(left / 1000)), int(np.ceil(bottom / 1000)), tmp_path)
    assert result.row is None
    assert [r[1] for r in result.rejects] == [Reject.NODATA]
    west = (left - np.floor(left / 1000) * 1000) / 1000  # the part of the cell west of the tile
    measured = float(result.rejects[0][2].split("no data ")[1].split()[0])
    assert abs(measured - west) <= 0.01  # within a column (the edge column is half interpolated)


def test_cell_over_the_scene_edge_is_kept_when_nodata_is_allowed(real_scene, tmp_path):
    _, scene = real_scene
    left, bottom = scene.bounds[:2]
    result, _ = _cut(scene, int(np.floor(left / 1000)), int(np.ceil(bottom / 1000)), tmp_path, max_nodata_fraction=1.0)
    image, _ = decode.decode_geotiff(result.row["rs_bytes"])
    west = int(round((left - np.floor(left / 1000) * 1000) / 10))
    assert (image[:, :, : west - 1] == 0).all() and (image[:, :, west + 1 :] > 0).any(axis=0).all()
