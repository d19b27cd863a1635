"""NILI: Neural Implicit Local Interpolation of RS tokens at arbitrary points (LIIF-style).

Shape legend: B batch, K query points per image, D width, Gh/Gw token grid, N = Gh*Gw.
Query points ``xy`` are normalized image coordinates in [-1, 1]: x to the right, y
downward, ``align_corners=False`` (pixel edges at +-1).

For each query q and each of the four diagonal shifts v in {-1, +1}^2, the nearest cell
to q + v * half-cell gives a feature z (its 3x3 unfolded neighbourhood, 9D channels) and a
centre c. A single linear layer (``imnet`` in the reference) predicts from [z, (q - c) in cell units]; the
four predictions are blended with the area of the diagonally opposite rectangle.

Vectorized form. The layer is linear, so ``W_z @ unfold3x3(F)`` equals a 3x3 convolution
of F with ``W_z`` reshaped to (D, D, 3, 3) (unfold orders channels (c, ky, kx)). We run that
convolution once per image (N cells) and gather the four cells of each of the K queries,
instead of applying a (9D + 2) x D linear to 4K gathered 9D vectors: the same result, with
the big matmul done on min(N, 4K) rows and no (B, 9D, Gh, Gw) unfolded tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_SHIFTS = ((-1, -1), (-1, 1), (1, -1), (1, 1))  # (vx, vy); order matters for the diagonal swap
_EPS_SHIFT = 1e-6
_EPS_CLAMP = 1e-6
_EPS_AREA = 1e-9


def cell_centres(n: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Centres of n cells spanning [-1, 1]: -1 + (2i + 1) / n."""
    return -1 + (2 * torch.arange(n, device=device, dtype=dtype) + 1) / n


def nearest_cell(coord: torch.Tensor, n: int) -> torch.Tensor:
    """Index of the nearest cell centre, exactly as ``grid_sample(mode="nearest")`` picks it."""
    # Unnormalize with align_corners=False, then round half to even like nearbyint.
    return torch.round(((coord + 1) * n - 1) / 2).clamp_(0, n - 1).long()


class NILI(nn.Module):
    """Local RS feature at K query points per image: tokens (B, N, D), xy (B, K, 2) -> (B, K, D)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        # The reference's ``imnet``: Linear(9D + 2 -> D). Held as this module's own
        # parameters (not a child Linear) because forward slices the weight, and ZeRO-3
        # gathers a module's parameters only around that module's own forward.
        layer = nn.Linear(9 * dim + 2, dim)
        self.weight = nn.Parameter(layer.weight.detach().clone())
        self.bias = nn.Parameter(layer.bias.detach().clone())

    def _cell_predictions(self, feat_BDHW: torch.Tensor) -> torch.Tensor:
        """W_z @ unfold3x3(F) + b for every cell, as one 3x3 convolution: (B, D, Gh, Gw)."""
        D = self.dim
        w_z = self.weight[:, : 9 * D].reshape(D, D, 3, 3)
        return F.conv2d(feat_BDHW, w_z, self.bias, padding=1)

    def forward(self, tokens_BND: torch.Tensor, xy_BK2: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
        B, N, D = tokens_BND.shape
        Gh, Gw = grid_hw
        if N != Gh * Gw:
            raise ValueError(f"{N} tokens do not form a {Gh}x{Gw} grid")
        K = xy_BK2.shape[1]
        feat_BDHW = tokens_BND.transpose(1, 2).reshape(B, D, Gh, Gw)
        cells_BND = self._cell_predictions(feat_BDHW).flatten(2).transpose(1, 2)  # (B, N, D)
        w_rel_D2 = self.weight[:, 9 * D :]  # (D, 2)

        xy = xy_BK2.to(tokens_BND.dtype)
        preds, areas = [], []
        for vx, vy in _SHIFTS:  # four fixed shifts, vectorized over B and K
            sx = (xy[..., 0] + vx / Gw + _EPS_SHIFT).clamp(-1 + _EPS_CLAMP, 1 - _EPS_CLAMP)
            sy = (xy[..., 1] + vy / Gh + _EPS_SHIFT).clamp(-1 + _EPS_CLAMP, 1 - _EPS_CLAMP)
            col, row = nearest_cell(sx, Gw), nearest_cell(sy, Gh)  # (B, K)
            cx = -1 + (2 * col + 1).to(xy.dtype) / Gw
            cy = -1 + (2 * row + 1).to(xy.dtype) / Gh
            rel_BK2 = torch.stack(((xy[..., 0] - cx) * Gw, (xy[..., 1] - cy) * Gh), dim=-1)
            idx = (row * Gw + col).unsqueeze(-1).expand(B, K, D)
            pred = torch.gather(cells_BND, 1, idx) + rel_BK2 @ w_rel_D2.T
            preds.append(pred)
            areas.append((rel_BK2[..., 0] * rel_BK2[..., 1]).abs() + _EPS_AREA)
        total = areas[0] + areas[1] + areas[2] + areas[3]
        # Bilinear-style blend: each prediction weighted by the diagonally opposite area.
        out = preds[0] * (areas[3] / total).unsqueeze(-1)
        out = out + preds[1] * (areas[2] / total).unsqueeze(-1)
        out = out + preds[2] * (areas[1] / total).unsqueeze(-1)
        return out + preds[3] * (areas[0] / total).unsqueeze(-1)

    def forward_single(self, tokens_BND: torch.Tensor, xy_B2: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
        """One query per image, computed the direct way (unfold + grid_sample + imnet).

        The literal form of the method, kept as the reference for tests and the benchmark.
        """
        B, N, D = tokens_BND.shape
        Gh, Gw = grid_hw
        feat = tokens_BND.transpose(1, 2).reshape(B, D, Gh, Gw)
        feat9 = F.unfold(feat, 3, padding=1).view(B, 9 * D, Gh, Gw)
        centres = torch.stack(
            torch.meshgrid(cell_centres(Gh, feat.device, feat.dtype), cell_centres(Gw, feat.device, feat.dtype), indexing="ij"),
            dim=0,
        )[[1, 0]]  # (2, Gh, Gw) as (x, y)
        centres = centres.unsqueeze(0).expand(B, 2, Gh, Gw)
        q = xy_B2.to(feat.dtype).view(B, 1, 1, 2)
        preds, areas = [], []
        for vx, vy in _SHIFTS:
            s = q.clone()
            s[..., 0] += vx / Gw + _EPS_SHIFT
            s[..., 1] += vy / Gh + _EPS_SHIFT
            s = s.clamp(-1 + _EPS_CLAMP, 1 - _EPS_CLAMP)
            z = F.grid_sample(feat9, s, mode="nearest", align_corners=False).view(B, 9 * D)
            c = F.grid_sample(centres, s, mode="nearest", align_corners=False).view(B, 2)
            rel = (q.view(B, 2) - c) * torch.tensor([Gw, Gh], dtype=feat.dtype, device=feat.device)
            preds.append(F.linear(torch.cat((z, rel), dim=-1), self.weight, self.bias))
            areas.append((rel[:, 0] * rel[:, 1]).abs() + _EPS_AREA)
        total = torch.stack(areas).sum(0)
        weights = [areas[3], areas[2], areas[1], areas[0]]
        return sum(p * (w / total).unsqueeze(-1) for p, w in zip(preds, weights))


def interpolate_tokens(
    tokens_BND: torch.Tensor, xy_BK2: torch.Tensor, grid_hw: tuple[int, int], mode: str
) -> torch.Tensor:
    """Bilinear or bicubic sampling of the token grid at K points: the NILI baselines."""
    if mode not in ("bilinear", "bicubic"):
        raise ValueError(f"interpolation mode must be bilinear or bicubic, got {mode!r}")
    B, N, D = tokens_BND.shape
    feat = tokens_BND.transpose(1, 2).reshape(B, D, *grid_hw)
    out = F.grid_sample(feat, xy_BK2.to(feat.dtype).unsqueeze(1), mode=mode, align_corners=False)  # (B, D, 1, K)
    return out[:, :, 0].transpose(1, 2)
