from __future__ import annotations

import numpy as np
import pytest
import rasterio

from gair import geo
from gair.data import decode, manifest
from gair.data.decode import BadRowError, DecodeSpec
from tests.data.conftest import BAD_ROW_CORPUS, TINY_BANDS, bad_row, good_row


def spec(**kw) -> DecodeSpec:
    base = dict(bands=TINY_BANDS, rs_size=32, sv_size=24, obs_per_tile=4, extra_points=6)
    base.update(kw)
    return DecodeSpec(**base)


def test_decode_row_shapes_and_padding() -> None:
    out = decode.decode_row(good_row(obs=3), spec())
    assert out["rs"].shape == (5, 32, 32) and out["rs"].dtype == np.float32
    assert out["rs"].min() >= 0.0 and out["rs"].max() <= 1.0
    assert out["sv"].shape == (4, 24, 24, 3) and out["sv"].dtype == np.uint8
    assert out["sv_mask"].tolist() == [True, True, True, False]
    assert not out["sv"][3].any() and out["sv"][:3].any()
    assert out["xy_extra"].shape == (6, 2) and out["lonlat_extra"].shape == (6, 2)


@pytest.mark.parametrize("augment", [False, True])
def test_xy_and_lonlat_agree_through_the_tile_georeference(augment: bool) -> None:
    """Un-augmenting xy and mapping through the tile's CRS gives back lonlat (both CRS kinds)."""
    for index in (0, 1):  # 0: UTM, 1: EPSG:4326
        row = good_row(index, obs=3)
        out = decode.decode_row(row, spec(augment=augment))
        info = decode.check_georeference(row)
        # Compare with the manifest's float64 (lon, lat): float32 degrees are only good to about a metre.
        lonlat64 = np.array([[o["lon"], o["lat"]] for o in row["observations"]])
        np.testing.assert_allclose(out["lonlat"][:3], lonlat64, atol=1e-4)
        want = geo.lonlat_to_xy(lonlat64, info.crs, info.transform, info.width, info.height)
        assert geo.inside(out["xy"][:3]).all()
        if not augment:
            np.testing.assert_allclose(out["xy"][:3], want, atol=1e-4)
        back = geo.xy_to_lonlat(out["xy_extra"].astype(np.float64), info.crs, info.transform, info.width, info.height)
        if not augment:
            np.testing.assert_allclose(back, out["lonlat_extra"], atol=1e-4)
        else:
            assert not np.allclose(out["xy"][:3], want, atol=1e-3)  # the crop/flip moved them


def test_decode_is_deterministic_for_seed_and_varies_with_epoch() -> None:
    row = good_row(obs=8)
    a = decode.decode_row(row, spec(augment=True, seed=1))
    b = decode.decode_row(row, spec(augment=True, seed=1))
    c = decode.decode_row(row, spec(augment=True, seed=1, epoch=1))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["xy_extra"], c["xy_extra"])


def test_more_observations_than_k_are_subsampled() -> None:
    out = decode.decode_row(good_row(obs=9), spec(obs_per_tile=4, augment=True))
    assert out["sv_mask"].all()


@pytest.mark.parametrize("kind, mutate, reason", BAD_ROW_CORPUS, ids=[k for k, _, _ in BAD_ROW_CORPUS])
def test_bad_row_corpus_gets_its_reason(kind: str, mutate, reason: str) -> None:
    """Each kind of bad input raises BadRowError with its specific reason, and the validator reports it."""
    row = bad_row(kind)
    with pytest.raises(BadRowError) as err:
        decode.decode_row(row, spec(obs_per_tile=3))
    assert err.value.reason == reason
    assert err.value.item_id.startswith(f"bad-{kind}")
    assert [p.reason for p in manifest.check_row(row)] == [reason]


def test_corpus_has_at_least_ten_distinct_reasons() -> None:
    assert len({r for _, _, r in BAD_ROW_CORPUS}) >= 10


def test_decode_real_sentinel2_tile(real_tiles) -> None:
    path = real_tiles[0]
    data = path.read_bytes()
    image, info = decode.decode_geotiff(data)
    assert image.shape == (12, 256, 256) and image.dtype == np.uint16
    assert info.crs.startswith("EPSG:32")
    with rasterio.open(path) as src:
        np.testing.assert_array_equal(image, src.read())
