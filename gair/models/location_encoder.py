"""Location encoder: Equal Earth projection + GeoCLIP-style random Fourier features.

Input is ``lonlat`` = (lon, lat) in degrees, in that order (GeoCLIP itself takes
(lat, lon); the GAIR reference takes (lon, lat)). Out-of-range input raises.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# Equal Earth projection constants (Savric et al. 2018) and GeoCLIP's scale factor.
A1, A2, A3, A4 = 1.340264, -0.081106, 0.000893, 0.003796
SF = 66.50336


def check_lonlat(lonlat_B2: torch.Tensor) -> None:
    """Raise ValueError unless ``lonlat_B2`` is finite (lon, lat) degrees in range."""
    if lonlat_B2.ndim != 2 or lonlat_B2.shape[-1] != 2:
        raise ValueError(f"lonlat must have shape (B, 2) as (lon, lat) in degrees, got {tuple(lonlat_B2.shape)}")
    lon, lat = lonlat_B2[:, 0], lonlat_B2[:, 1]
    bad = ~torch.isfinite(lonlat_B2).all(dim=1) | (lon.abs() > 180) | (lat.abs() > 90)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0, 0])
        raise ValueError(
            f"{int(bad.sum())} location(s) out of range: expected (lon, lat) degrees with lon in "
            f"[-180, 180] and lat in [-90, 90]; first bad row {i}: {lonlat_B2[i].tolist()}"
        )


def equal_earth(lonlat_B2: torch.Tensor) -> torch.Tensor:
    """(lon, lat) degrees -> Equal Earth (x, y), scaled by SF / 180 as in GeoCLIP."""
    lon = torch.deg2rad(lonlat_B2[:, 0])
    lat = torch.deg2rad(lonlat_B2[:, 1])
    theta = torch.asin(math.sqrt(3.0) / 2 * torch.sin(lat))
    denom = 3 * (9 * A4 * theta**8 + 7 * A3 * theta**6 + 3 * A2 * theta**2 + A1)
    x = 2 * math.sqrt(3.0) * lon * torch.cos(theta) / denom
    y = A4 * theta**9 + A3 * theta**7 + A2 * theta**3 + A1 * theta
    return torch.stack((x, y), dim=1) * SF / 180


class FourierBranch(nn.Module):
    """One scale: fixed Gaussian frequencies B (saved, not trained) -> MLP -> head."""

    def __init__(self, sigma: float, num_features: int, hidden: int, out_dim: int, generator: torch.Generator) -> None:
        super().__init__()
        self.register_buffer("freqs", torch.randn(num_features, 2, generator=generator) * sigma)
        self.mlp = nn.Sequential(
            nn.Linear(2 * num_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
        )
        self.head = nn.Linear(hidden, out_dim)

    def forward(self, v_B2: torch.Tensor) -> torch.Tensor:
        # Phases reach thousands of radians at sigma 256: compute them in float32 even
        # when the model runs in bf16/fp16, then hand the features to the MLP's dtype.
        with torch.autocast(v_B2.device.type, enabled=False):
            phase = 2 * math.pi * v_B2.float() @ self.freqs.float().T  # (B, F)
            feats = torch.cat((torch.cos(phase), torch.sin(phase)), dim=-1)
        return self.head(self.mlp(feats.to(self.head.weight.dtype)))


class LocationEncoder(nn.Module):
    """(B, 2) lonlat degrees -> (B, D), the sum of the branches."""

    def __init__(
        self,
        out_dim: int = 768,
        sigmas: tuple[float, ...] = (1.0, 16.0, 256.0),
        num_features: int = 256,
        hidden: int = 1024,
        seed: int = 0,
    ) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.branches = nn.ModuleList(FourierBranch(s, num_features, hidden, out_dim, gen) for s in sigmas)

    def forward(self, lonlat_B2: torch.Tensor, check: bool = True) -> torch.Tensor:
        if check:
            check_lonlat(lonlat_B2)
        v = equal_earth(lonlat_B2.float())  # float32: theta**9 and the phases need it
        out = self.branches[0](v)
        for branch in self.branches[1:]:
            out = out + branch(v)
        return out
