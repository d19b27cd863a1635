"""A random training batch in the contract layout (docs/contracts.md), for engine tests."""

from __future__ import annotations

import torch

from gair.configs.train import PretrainConfig


def random_batch(cfg: PretrainConfig, seed: int = 0, rows: slice | None = None) -> dict[str, torch.Tensor]:
    """``data.batch_size`` tiles (all observations real); ``rows``: only those tiles of it."""
    g = torch.Generator().manual_seed(seed)
    B, K, M = cfg.data.batch_size, cfg.data.obs_per_tile, cfg.data.extra_points
    C, S, V = len(cfg.model.rs_bands), cfg.model.rs_image_size, cfg.model.sv_image_size
    lonlat = torch.stack(
        [torch.rand(B, K + M, generator=g) * 360 - 180, torch.rand(B, K + M, generator=g) * 160 - 80], -1
    )
    batch = {
        "rs": torch.randn(B, C, S, S, generator=g),
        "sv": torch.randn(B, K, 3, V, V, generator=g),
        "sv_mask": torch.ones(B, K, dtype=torch.bool),
        "lonlat": lonlat[:, :K].contiguous(),
        "xy": torch.rand(B, K, 2, generator=g) * 2 - 1,
        "xy_extra": torch.rand(B, M, 2, generator=g) * 2 - 1,
        "lonlat_extra": lonlat[:, K:].contiguous(),
    }
    if rows is not None:
        batch = {k: v[rows].contiguous() for k, v in batch.items()}
    batch["sv_index"] = batch["sv_mask"].reshape(-1).nonzero()[:, 0]
    return batch
