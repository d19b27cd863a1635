"""FIFO queue of past (lon, lat) coordinates: the SECL negatives, re-encoded every step."""

from __future__ import annotations

import torch
from torch import nn

from gair.losses.distributed import gather_no_grad


def random_lonlat(n: int, seed: int = 0) -> torch.Tensor:
    """n points uniform on the sphere, as (lon, lat) degrees.

    The reference starts its queue with normalised Gaussian noise, i.e. points within a
    degree of (0, 0): useless negatives until it fills. Area-uniform points are at least
    plausible locations.
    """
    g = torch.Generator().manual_seed(seed)
    lon = torch.rand(n, generator=g) * 360 - 180
    lat = torch.rad2deg(torch.asin(torch.rand(n, generator=g) * 2 - 1))
    return torch.stack([lon, lat], dim=1)


class LocationQueue(nn.Module):
    """Buffers ``lonlat`` (Q, 2) and ``ptr`` (1,): saved with the module, so checkpointed."""

    def __init__(self, size: int, seed: int = 0) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("lonlat", random_lonlat(size, seed))
        self.register_buffer("ptr", torch.zeros(1, dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, lonlat_N2: torch.Tensor, mask_N: torch.Tensor | None = None) -> None:
        """Append the valid coordinates gathered from every worker, oldest entries first out."""
        if self.size == 0:
            return
        if mask_N is None:
            mask_N = torch.ones(lonlat_N2.shape[0], dtype=torch.bool, device=lonlat_N2.device)
        coords = gather_no_grad(lonlat_N2.float().contiguous())
        valid = gather_no_grad(mask_N.bool().contiguous())
        if coords.shape[0] == 0:
            return
        # The newest ``size`` valid rows go to slots ptr, ptr + 1, ... (mod size), the others
        # to a scratch slot: all on the device, no data-dependent shape, no host sync.
        order = valid.long().cumsum(0) - 1  # rank of each row among the valid ones
        count = order[-1:] + 1  # (1,) valid rows in all
        drop = (count - self.size).clamp(min=0)  # older valid rows that do not fit
        keep = valid & (order >= drop)
        slots = torch.where(keep, (self.ptr + order - drop) % self.size, self.size)
        ext = torch.cat([self.lonlat, self.lonlat.new_zeros(1, 2)])
        ext.index_copy_(0, slots, coords.to(ext.dtype))
        self.lonlat.copy_(ext[: self.size])
        self.ptr.copy_((self.ptr + count - drop) % self.size)

    def extra_repr(self) -> str:
        return f"size={self.size}"
