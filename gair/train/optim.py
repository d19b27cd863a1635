"""AdamW with no weight decay on biases, norms and other 1-d parameters; warmup + cosine."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from gair.configs.train import OptimConfig


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed matrices, and undecayed biases/norms/scales (ndim <= 1)."""
    decay, no_decay = [], []
    for _, p in module.named_parameters():
        if not p.requires_grad:
            continue
        # A ZeRO-3 partitioned parameter is a 1-d shard: its real shape is ds_shape.
        ndim = len(p.ds_shape) if hasattr(p, "ds_shape") else p.ndim
        (no_decay if ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "decay"}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "name": "no_decay"})
    return groups


def build_optimizer(
    module: nn.Module, cfg: OptimConfig, *, fused: bool = False, peak_lr: float | None = None
) -> torch.optim.AdamW:
    """AdamW at ``peak_lr`` (``PretrainConfig.peak_lr``: the base_lr rule or optim.lr; default optim.lr)."""
    kwargs = {"fused": True} if fused else {}
    lr = cfg.lr if peak_lr is None else peak_lr
    return torch.optim.AdamW(
        param_groups(module, cfg.weight_decay), lr=lr, betas=tuple(cfg.betas), eps=cfg.eps, **kwargs
    )


def lr_factor(step: int, cfg: OptimConfig, max_steps: int, peak_lr: float | None = None) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step``: linear warmup, then half-cycle cosine."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    span = max(1, max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.min_lr / (cfg.lr if peak_lr is None else peak_lr)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_lr_schedule(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, max_steps: int, peak_lr: float | None = None
) -> torch.optim.lr_scheduler.LambdaLR:
    fn: Callable[[int], float] = lambda step: lr_factor(step, cfg, max_steps, peak_lr)  # noqa: E731
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
