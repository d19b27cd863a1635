"""Collectives for the losses, as no-ops when torch.distributed is not initialised.

Pure torch.distributed (no Ray/DeepSpeed): the loss owns its cross-worker gather, as in
OpenCLIP.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.nn.functional import all_gather as _all_gather_autograd


def world() -> tuple[int, int]:
    """(rank, world size), (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all workers along dim 0; gradients flow back to each owner."""
    _, size = world()
    if size == 1:
        return x
    return torch.cat(_all_gather_autograd(x.contiguous()), dim=0)


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    _, size = world()
    if size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


@torch.no_grad()
def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    _, size = world()
    if size == 1:
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x
