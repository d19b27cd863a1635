"""Georeferencing: (lon, lat) in degrees <-> normalized image coordinates of a tile.

Conventions used across the project:
- Geographic coordinates are always ``lonlat`` = (lon, lat) in degrees, WGS84.
- Normalized image coordinates ``xy`` are in [-1, 1]: x to the right (columns), y downward
  (rows); -1 and +1 are the outer edges of the first and last pixel, which is
  ``align_corners=False`` in ``torch.nn.functional.grid_sample`` terms.
- A tile is georeferenced by its CRS (any, e.g. ``EPSG:4326`` or a UTM zone) and its
  GDAL/rasterio affine transform (pixel (col, row) -> CRS (x, y)).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform

WGS84 = CRS.from_epsg(4326)


def _as_affine(transform: Affine | Sequence[float]) -> Affine:
    if isinstance(transform, Affine):
        return transform
    values = list(transform)
    if len(values) not in (6, 9):
        raise ValueError(f"an affine transform has 6 (or 9) coefficients a,b,c,d,e,f; got {len(values)}")
    return Affine(*values[:6])


def _as_crs(crs: CRS | str | int) -> CRS:
    if isinstance(crs, CRS):
        return crs
    if isinstance(crs, int):
        return CRS.from_epsg(crs)
    return CRS.from_user_input(crs)


def check_lonlat(lonlat: np.ndarray) -> np.ndarray:
    """Return ``lonlat`` as float64 (N, 2); raise ValueError for NaN or out-of-range values."""
    arr = np.asarray(lonlat, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[-1] != 2:
        raise ValueError(f"lonlat must have shape (N, 2) as (lon, lat) in degrees, got {arr.shape}")
    bad = ~np.isfinite(arr).all(axis=1) | (np.abs(arr[:, 0]) > 180) | (np.abs(arr[:, 1]) > 90)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{int(bad.sum())} coordinate(s) are not valid (lon, lat) degrees "
            f"(lon in [-180, 180], lat in [-90, 90]); first bad row {i}: {arr[i].tolist()}"
        )
    return arr


def lonlat_to_xy(
    lonlat: np.ndarray,
    crs: CRS | str | int,
    transform: Affine | Sequence[float],
    width: int,
    height: int,
) -> np.ndarray:
    """Map (lon, lat) degrees to normalized image coordinates of a tile.

    Args:
        lonlat: (N, 2) array of (lon, lat) in degrees.
        crs: the tile's CRS (anything rasterio accepts: ``"EPSG:32633"``, WKT, EPSG code).
        transform: the tile's affine transform (pixel -> CRS), an ``Affine`` or its 6 coefficients.
        width, height: the tile's size in pixels.

    Returns:
        (N, 2) float64 array of (x, y) in [-1, 1] for points inside the tile (outside
        points fall outside [-1, 1]; see :func:`inside`).
    """
    ll = check_lonlat(lonlat)
    crs = _as_crs(crs)
    if crs == WGS84:
        xs, ys = ll[:, 0], ll[:, 1]
    else:
        xs, ys = warp_transform(WGS84, crs, ll[:, 0].tolist(), ll[:, 1].tolist())
        xs, ys = np.asarray(xs), np.asarray(ys)
    inv = ~_as_affine(transform)
    cols, rows = inv @ (np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64))
    x = 2.0 * np.asarray(cols) / width - 1.0
    y = 2.0 * np.asarray(rows) / height - 1.0
    return np.stack([x, y], axis=-1)


def xy_to_lonlat(
    xy: np.ndarray,
    crs: CRS | str | int,
    transform: Affine | Sequence[float],
    width: int,
    height: int,
) -> np.ndarray:
    """Inverse of :func:`lonlat_to_xy`: normalized image coordinates -> (lon, lat) degrees."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    cols = (xy[:, 0] + 1.0) * width / 2.0
    rows = (xy[:, 1] + 1.0) * height / 2.0
    xs, ys = _as_affine(transform) @ (cols, rows)
    crs = _as_crs(crs)
    if crs != WGS84:
        xs, ys = warp_transform(crs, WGS84, np.asarray(xs).tolist(), np.asarray(ys).tolist())
    return np.stack([np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)], axis=-1)


def inside(xy: np.ndarray) -> np.ndarray:
    """Boolean mask of normalized coordinates that lie inside the tile."""
    xy = np.asarray(xy)
    return np.isfinite(xy).all(axis=-1) & (np.abs(xy) <= 1.0).all(axis=-1)


def tile_bounds_lonlat(
    crs: CRS | str | int, transform: Affine | Sequence[float], width: int, height: int
) -> tuple[float, float, float, float]:
    """(lon_min, lat_min, lon_max, lat_max) of a tile's footprint (corners and edge midpoints)."""
    grid = np.array([[x, y] for x in (-1.0, 0.0, 1.0) for y in (-1.0, 0.0, 1.0)])
    ll = xy_to_lonlat(grid, crs, transform, width, height)
    return float(ll[:, 0].min()), float(ll[:, 1].min()), float(ll[:, 0].max()), float(ll[:, 1].max())
