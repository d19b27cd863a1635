from __future__ import annotations

import numpy as np
import pytest
from rasterio.warp import transform as warp

from gair import geo

UTM = ("EPSG:32633", (10.0, 0.0, 500000.0, 0.0, -10.0, 4_000_000.0), 200, 100)
WGS = ("EPSG:4326", (0.001, 0.0, 10.0, 0.0, -0.001, 50.0), 300, 200)


def test_corners_and_centre_in_wgs84() -> None:
    crs, t, w, h = WGS
    lonlat = np.array([[10.0, 50.0], [10.3, 49.8], [10.15, 49.9]])
    xy = geo.lonlat_to_xy(lonlat, crs, t, w, h)
    np.testing.assert_allclose(xy, [[-1, -1], [1, 1], [0, 0]], atol=1e-9)


def test_pixel_centre_convention_align_corners_false() -> None:
    crs, t, w, h = WGS
    # centre of pixel (col 0, row 0)
    xy = geo.lonlat_to_xy(np.array([[10.0005, 49.9995]]), crs, t, w, h)
    np.testing.assert_allclose(xy, [[1 / w - 1, 1 / h - 1]], atol=1e-9)


@pytest.mark.parametrize("tile", [UTM, WGS])
def test_roundtrip(tile) -> None:
    crs, t, w, h = tile
    xy = np.random.default_rng(0).uniform(-1, 1, (50, 2))
    ll = geo.xy_to_lonlat(xy, crs, t, w, h)
    np.testing.assert_allclose(geo.lonlat_to_xy(ll, crs, t, w, h), xy, atol=1e-7)


def test_utm_matches_an_independent_projection() -> None:
    crs, t, w, h = UTM
    ll = np.array([[15.01, 36.1]])
    (x,), (y,) = warp("EPSG:4326", crs, [15.01], [36.1])
    col, row = (x - t[2]) / t[0], (y - t[5]) / t[4]
    np.testing.assert_allclose(geo.lonlat_to_xy(ll, crs, t, w, h), [[2 * col / w - 1, 2 * row / h - 1]], atol=1e-9)


def test_lonlat_order_is_enforced_by_range() -> None:
    with pytest.raises(ValueError, match="not valid"):
        geo.lonlat_to_xy(np.array([[10.0, 95.0]]), *WGS)
    with pytest.raises(ValueError, match="not valid"):
        geo.lonlat_to_xy(np.array([[np.nan, 1.0]]), *WGS)


def test_inside_and_bounds() -> None:
    assert geo.inside(np.array([[0, 0], [1.0, -1.0], [1.01, 0], [np.nan, 0]])).tolist() == [True, True, False, False]
    lon_min, lat_min, lon_max, lat_max = geo.tile_bounds_lonlat(*WGS)
    assert (lon_min, lat_min, lon_max, lat_max) == pytest.approx((10.0, 49.8, 10.3, 50.0))
