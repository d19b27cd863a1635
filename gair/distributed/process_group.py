"""Small torch.distributed helpers that also work in a single process (no group)."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if _active() else 0


def get_world_size() -> int:
    return dist.get_world_size() if _active() else 1


def _device() -> torch.device:
    # NCCL reduces CUDA tensors only; gloo reduces CPU tensors.
    if _active() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def mean_across_workers(values: dict[str, float | torch.Tensor]) -> dict[str, float]:
    """Average scalar metrics over all workers (one all-reduce); every rank must call it."""
    keys = sorted(values)
    if not keys:
        return {}
    vec = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_device())
    if _active():
        dist.all_reduce(vec, op=dist.ReduceOp.SUM)
        vec /= dist.get_world_size()
    return dict(zip(keys, vec.tolist(), strict=True))


def all_true(flag: bool) -> bool:
    """True when ``flag`` is true on every worker: keeps workers in lockstep at the end of a shard."""
    if not _active():
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def barrier() -> None:
    if _active():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (picklable objects; every rank must call it)."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_device())
    return box[0]
