"""Street views -> square cells of ``tile_size_m`` on a UTM grid; one cell becomes one tile.

The grid of a street view is the UTM zone it lies in (EPSG 326zz north, 327zz south; the
Norway/Svalbard exceptions are not applied) when a scene in that zone covers it, else the
zone of a scene that does: a tile must keep its scene's CRS, so cells live in scene CRSs.
Cell (i, j) covers ``[i * size, (i + 1) * size) x [j * size, (j + 1) * size)`` metres,
so every cell is aligned to the 10 m pixel grid of Sentinel-2 products and the same street
view always lands in the same cell, whatever else is in the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from gair.prepare.inputs import Scene


@dataclass
class Cell:
    crs: str
    ix: int
    iy: int
    size_m: float
    obs: list[int] = field(default_factory=list)  # row indices into the street-view table
    scene_ids: list[str] = field(default_factory=list)  # scenes of the same CRS that overlap the cell

    @property
    def cell_id(self) -> str:
        zone = self.crs.split(":")[-1]
        return f"{zone}_{int(self.size_m)}m_{self.ix}_{self.iy}"

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        s = self.size_m
        return (self.ix * s, self.iy * s, (self.ix + 1) * s, (self.iy + 1) * s)


def utm_crs(lonlat: np.ndarray) -> list[str]:
    """The UTM zone CRS ("EPSG:326zz" / "EPSG:327zz") of each (lon, lat)."""
    ll = np.asarray(lonlat, dtype=np.float64).reshape(-1, 2)
    zone = (np.floor((ll[:, 0] + 180.0) / 6.0).astype(int) % 60) + 1
    base = np.where(ll[:, 1] >= 0, 32600, 32700)
    return [f"EPSG:{b + z}" for b, z in zip(base, zone)]


def normalize_crs(crs: str) -> str:
    from rasterio.crs import CRS

    c = CRS.from_user_input(crs)
    epsg = c.to_epsg()
    return f"EPSG:{epsg}" if epsg else c.to_string()


def _contains(bbox: Sequence[float], lonlat: np.ndarray) -> np.ndarray:
    return (lonlat[:, 0] >= bbox[0]) & (lonlat[:, 0] <= bbox[2]) & (lonlat[:, 1] >= bbox[1]) & (lonlat[:, 1] <= bbox[3])


def assign_cells(lonlat: np.ndarray, scenes: Sequence[Scene], size_m: float) -> tuple[list[Cell], list[int]]:
    """Cells (sorted by id) holding the street views, and the rows no scene covers.

    ``lonlat`` must be valid (finite, in range); rows are indices into it.
    """
    from rasterio.warp import transform as warp_transform

    ll = np.asarray(lonlat, dtype=np.float64).reshape(-1, 2)
    crs_of_scene = {s.scene_id: normalize_crs(s.crs) for s in scenes}
    # Which scene CRSs have a footprint over each point.
    covering: list[set[str]] = [set() for _ in range(len(ll))]
    for s in scenes:
        for i in np.flatnonzero(_contains(s.lonlat_bbox, ll)):
            covering[i].add(crs_of_scene[s.scene_id])
    own = utm_crs(ll)
    grid_crs: list[str | None] = [
        (own[i] if own[i] in covering[i] else min(covering[i])) if covering[i] else None for i in range(len(ll))
    ]
    uncovered = [i for i, c in enumerate(grid_crs) if c is None]
    cells: dict[tuple[str, int, int], Cell] = {}
    for crs in sorted({c for c in grid_crs if c}):
        rows = np.array([i for i, c in enumerate(grid_crs) if c == crs])
        xs, ys = warp_transform("EPSG:4326", crs, ll[rows, 0].tolist(), ll[rows, 1].tolist())
        ix = np.floor(np.asarray(xs) / size_m).astype(np.int64)
        iy = np.floor(np.asarray(ys) / size_m).astype(np.int64)
        for r, i, j in zip(rows.tolist(), ix.tolist(), iy.tolist()):
            cells.setdefault((crs, i, j), Cell(crs, i, j, size_m)).obs.append(r)
    for cell in cells.values():
        left, bottom, right, top = cell.bounds
        cell.scene_ids = [
            s.scene_id
            for s in scenes
            if crs_of_scene[s.scene_id] == cell.crs
            and s.bounds[0] < right and s.bounds[2] > left and s.bounds[1] < top and s.bounds[3] > bottom
        ]  # fmt: skip
    return sorted(cells.values(), key=lambda c: c.cell_id), uncovered
