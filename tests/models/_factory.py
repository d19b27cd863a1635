"""Tiny configs and seeded inputs shared by the model tests."""

from __future__ import annotations

import torch

from gair.configs.model import ModelConfig
from gair.models.gair import GAIR


def tiny_cfg(**overrides) -> ModelConfig:
    kw = dict(size="tiny", rs_image_size=32, sv_image_size=32)
    kw.update(overrides)
    return ModelConfig(**kw)


def tiny_model(seed: int = 0, **overrides) -> GAIR:
    torch.manual_seed(seed)
    return GAIR(tiny_cfg(**overrides))


def random_lonlat(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.rand(n, generator=g) * 360 - 180, torch.rand(n, generator=g) * 170 - 85], 1)
