"""Location regression: a probe on location embeddings against the same probe on raw (lon, lat).

Default task: mean annual air temperature at the 3,076 stations of
``../shared/data/satclip-s2/air_temperature_stations.csv``. The location encoder is small,
so the points are embedded in-process (no Ray).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from gair import geo
from gair.configs.eval import EvalConfig
from gair.data import storage
from gair.eval import probes, tables
from gair.models.gair import GAIR


@dataclass
class LocationResult:
    n_points: int
    gair: probes.ProbeResult
    raw_lonlat: probes.ProbeResult
    lonlat: np.ndarray = field(repr=False)  # (N, 2)
    target: np.ndarray = field(repr=False)  # (N,)


@torch.no_grad()
def embed_locations(model: GAIR, lonlat_N2: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """(N, 2) (lon, lat) degrees -> (N, D) location embeddings (float32)."""
    dev = next(model.parameters()).device
    out = []
    for i in range(0, len(lonlat_N2), batch_size):
        chunk = torch.as_tensor(lonlat_N2[i : i + batch_size], dtype=torch.float32, device=dev)
        out.append(model.encode_location(chunk).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.embed_dim), np.float32)


def load_points(cfg: EvalConfig) -> tuple[np.ndarray, np.ndarray]:
    """(lonlat (N, 2), target (N,)) from the task CSV; rows with a missing value are dropped."""
    lc = cfg.location
    s3 = storage.S3Options.from_config(cfg.extract)
    df = tables.read_csv(lc.csv, [lc.lon_column, lc.lat_column, lc.target_column], what="location", s3=s3)
    cols = [lc.lon_column, lc.lat_column, lc.target_column]
    try:
        values = df[cols].apply(lambda s: s.astype(float)).to_numpy()
    except (TypeError, ValueError) as exc:
        raise tables.CSVInputError(f"location: columns {cols} of {lc.csv} must be numeric ({exc})") from exc
    values = values[np.isfinite(values).all(axis=1)]
    if len(values) == 0:
        raise tables.CSVInputError(f"location: {lc.csv} has no row with finite {cols}")
    try:
        lonlat = geo.check_lonlat(values[:, :2])
    except ValueError as exc:
        raise tables.CSVInputError(
            f"location: {lc.csv}: {exc} (are {lc.lon_column!r} and {lc.lat_column!r} swapped?)"
        ) from exc
    return lonlat, values[:, 2]


def evaluate_location(model: GAIR, cfg: EvalConfig) -> LocationResult:
    lonlat, target = load_points(cfg)
    emb = embed_locations(model, lonlat, cfg.location.batch_size)
    probe = cfg.location.probe
    return LocationResult(
        len(target),
        probes.cross_validate_regression(emb, target, probe),
        probes.cross_validate_regression(lonlat, target, probe),
        lonlat,
        target,
    )


def world_grid(resolution_deg: float) -> tuple[np.ndarray, tuple[int, int]]:
    """Cell centres of a global (lon, lat) grid, row-major from the north: ((H*W, 2), (H, W))."""
    lons = np.arange(-180 + resolution_deg / 2, 180, resolution_deg)
    lats = np.arange(90 - resolution_deg / 2, -90, -resolution_deg)
    lon, lat = np.meshgrid(lons, lats)
    return np.stack([lon.ravel(), lat.ravel()], axis=1), lon.shape


def pca_rgb(emb_ND: np.ndarray) -> np.ndarray:
    """First three principal components of the embeddings, each min-max scaled to [0, 1]: (N, 3)."""
    from sklearn.decomposition import PCA

    x = emb_ND - emb_ND.mean(axis=0)
    comps = PCA(n_components=min(3, x.shape[1], len(x))).fit_transform(x)
    if comps.shape[1] < 3:
        comps = np.pad(comps, ((0, 0), (0, 3 - comps.shape[1])))
    lo, hi = np.percentile(comps, 1, axis=0), np.percentile(comps, 99, axis=0)
    return np.clip((comps - lo) / np.maximum(hi - lo, 1e-9), 0, 1)
