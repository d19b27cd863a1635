"""Fixtures of the evaluation tests: a tiny exported model, small synthetic inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gair.configs.model import ModelConfig
from gair.hub import save_pretrained
from gair.models.gair import GAIR


def tiny_model_cfg() -> ModelConfig:
    """The model of configs/pretrain_smoke.yaml."""
    return ModelConfig(size="tiny", rs_image_size=32, sv_image_size=32, sv_patch_size=16, location_rff_features=32)


def export_tiny(directory: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    return save_pretrained(GAIR(tiny_model_cfg()), directory)


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny GAIR in the gair.hub export format."""
    return export_tiny(tmp_path_factory.mktemp("tiny-export"))
