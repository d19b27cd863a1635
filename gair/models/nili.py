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
convolution once per image (N cells) when 4K >= N, and otherwise gather only the 3x3
neighbourhoods of the 4K looked-up cells: the same result, with the big matmul done on
min(N, 4K) rows, and never a (B, 9D, Gh, Gw) unfolded tensor.
"""

from __future__ import annotations

import math

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
        # gathers a module's parameters only around that module's own forward. Built
        # directly (not copied from a temporary Linear): under ``deepspeed.zero.Init`` a
        # temporary module is partitioned on creation and a copy of it has 0 elements.
        fan_in = 9 * dim + 2
        self.weight = nn.Parameter(torch.empty(dim, fan_in))
        self.bias = nn.Parameter(torch.empty(dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Linear``'s default initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for both."""
        bound = 1.0 / math.sqrt(self.weight.shape[1])
        nn.init.uniform_(self.weight, -bound, bound)  # = kaiming_uniform_(a=sqrt(5)) of nn.Linear
        nn.init.uniform_(self.bias, -bound, bound)

    def _conv_predictions(self, tokens_BND: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
        """W_z @ unfold3x3(F) + b for every cell, as one 3x3 convolution: (B, N, D)."""
        B, N, D = tokens_BND.shape
        feat_BDHW = tokens_BND.transpose(1, 2).reshape(B, D, *grid_hw)
        w_z = self.weight[:, : 9 * D].reshape(D, D, 3, 3)
        return F.conv2d(feat_BDHW, w_z, self.bias, padding=1).flatten(2).transpose(1, 2)

    def _gathered_predictions(
        self, tokens_BND: torch.Tensor, row_BS: torch.Tensor, col_BS: torch.Tensor, grid_hw: tuple[int, int]
    ) -> torch.Tensor:
        """W_z @ unfold3x3(F) + b at S given cells only, from their gathered 3x3 neighbours: (B, S, D)."""
        B, N, D = tokens_BND.shape
        Gh, Gw = grid_hw
        S = row_BS.shape[1]
        dr = torch.tensor([-1, -1, -1, 0, 0, 0, 1, 1, 1], device=row_BS.device)
        dc = torch.tensor([-1, 0, 1, -1, 0, 1, -1, 0, 1], device=row_BS.device)
        r9, c9 = row_BS[..., None] + dr, col_BS[..., None] + dc  # (B, S, 9)
        inside = ((r9 >= 0) & (r9 < Gh) & (c9 >= 0) & (c9 < Gw)).unsqueeze(-1)  # zero padding
        idx = (r9.clamp(0, Gh - 1) * Gw + c9.clamp(0, Gw - 1)).reshape(B, S * 9, 1).expand(B, S * 9, D)
        z_BS9D = torch.gather(tokens_BND, 1, idx).view(B, S, 9, D) * inside
        # unfold orders channels (c, k); the gathered vector is (k, c): permute the weight to match.
        w_z = self.weight[:, : 9 * D].reshape(D, D, 9).transpose(1, 2).reshape(D, 9 * D)
        return F.linear(z_BS9D.reshape(B, S, 9 * D), w_z, self.bias)

    def forward(self, tokens_BND: torch.Tensor, xy_BK2: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
        B, N, D = tokens_BND.shape
        Gh, Gw = grid_hw
        if Gh * Gw != N:
            raise ValueError(f"{N} tokens do not form a {Gh}x{Gw} grid")
        K = xy_BK2.shape[1]
        xy = xy_BK2.to(tokens_BND.dtype)

        # The four shifted lookups of every query at once: (B, 4K) cells and offsets.
        vx = torch.tensor([v[0] for v in _SHIFTS], device=xy.device, dtype=xy.dtype).repeat_interleave(K)
        vy = torch.tensor([v[1] for v in _SHIFTS], device=xy.device, dtype=xy.dtype).repeat_interleave(K)
        qx, qy = xy[..., 0].repeat(1, 4), xy[..., 1].repeat(1, 4)  # (B, 4K), shift-major
        sx = (qx + vx / Gw + _EPS_SHIFT).clamp(-1 + _EPS_CLAMP, 1 - _EPS_CLAMP)
        sy = (qy + vy / Gh + _EPS_SHIFT).clamp(-1 + _EPS_CLAMP, 1 - _EPS_CLAMP)
        col, row = nearest_cell(sx, Gw), nearest_cell(sy, Gh)
        rel_x = (qx - (-1 + (2 * col + 1).to(xy.dtype) / Gw)) * Gw
        rel_y = (qy - (-1 + (2 * row + 1).to(xy.dtype) / Gh)) * Gh

        # The (9D -> D) matmul on whichever is fewer: all N cells or the 4K looked-up ones.
        if 4 * K >= N:
            cells_BND = self._conv_predictions(tokens_BND, grid_hw)
            z_pred = torch.gather(cells_BND, 1, (row * Gw + col).unsqueeze(-1).expand(B, 4 * K, D))
        else:
            z_pred = self._gathered_predictions(tokens_BND, row, col, grid_hw)
        w_rel_D2 = self.weight[:, 9 * D :]
        pred = z_pred + torch.stack((rel_x, rel_y), dim=-1) @ w_rel_D2.T  # (B, 4K, D)

        area = (rel_x * rel_y).abs().view(B, 4, K) + _EPS_AREA
        # Bilinear-style blend: each prediction weighted by the diagonally opposite area.
        weight_B4K = area.flip(1) / area.sum(1, keepdim=True)
        return (pred.view(B, 4, K, D) * weight_B4K.unsqueeze(-1)).sum(1)

    def forward_single(self, tokens_BND: torch.Tensor, xy_B2: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
        """One query per image, computed the direct way (unfold + grid_sample + imnet).

        The literal form of the method, kept as the reference for tests and the benchmark.
        """
        B, N, D = tokens_BND.shape
        Gh, Gw = grid_hw
        feat = tokens_BND.transpose(1, 2).reshape(B, D, Gh, Gw)
        feat9 = F.unfold(feat, 3, padding=1).view(B, 9 * D, Gh, Gw)
        centres = torch.stack(
            torch.meshgrid(
                cell_centres(Gh, feat.device, feat.dtype), cell_centres(Gw, feat.device, feat.dtype), indexing="ij"
            ),
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
