"""configs/pretrain_paper.yaml: the reference recipe, each value with its source."""

from __future__ import annotations

import pytest

from gair.configs import ConfigError, load_config
from gair.configs.train import PretrainConfig
from gair.distributed import build_deepspeed_config
from tests.conftest import REPO_ROOT

PAPER = REPO_ROOT / "configs/pretrain_paper.yaml"


def test_paper_config_is_the_reference_recipe():
    cfg = load_config(PretrainConfig, PAPER)
    assert cfg.peak_lr == pytest.approx(2.88e-4)  # 1.5e-6 x 256 x 96 x 2 / 256
    assert cfg.model.rs_final_norm and cfg.model.rs_init.endswith("CROMA_base.pt") and cfg.model.sv_teacher
    assert cfg.loss.distill_weight == 0.2 and not cfg.loss.gather_negatives and cfg.loss.extra_points_weight == 0
    assert cfg.train.precision == "fp16" and cfg.train.grad_clip == 0 and cfg.train.grad_accum_steps == 96
    assert cfg.data.rs_color_jitter_p == 0.7 and cfg.data.sv_color_jitter_p == 0.3
    ds = build_deepspeed_config(cfg)
    # fp16 as autocast with DeepSpeed's GradScaler (loss scaling); clipping 0 = off in DeepSpeed.
    assert ds["torch_autocast"] == {"enabled": True, "dtype": "fp16"} and ds["gradient_clipping"] == 0.0


def test_every_value_names_its_source():
    for line in PAPER.read_text().splitlines():
        body = line.split("#")[0].rstrip()
        if body.strip() and not body.endswith(":"):
            assert "#" in line, f"no source comment: {line!r}"


def test_fixed_lr_still_works_and_base_lr_scales_with_the_batch():
    assert load_config(PretrainConfig, None, ["optim.lr=0.01"]).peak_lr == 0.01
    cfg = load_config(PretrainConfig, None, ["optim.base_lr=1e-3", "data.batch_size=8", "train.grad_accum_steps=4"])
    assert cfg.peak_lr == pytest.approx(1e-3 * 8 * 4 * cfg.train.num_workers / 256)


def test_distill_needs_a_teacher_and_jitter_bands_must_exist():
    with pytest.raises(ConfigError, match="sv_teacher"):
        load_config(PretrainConfig, None, ["loss.distill_weight=0.2"])
    with pytest.raises(ConfigError, match="B13"):
        load_config(PretrainConfig, None, ["data.rs_color_jitter_p=0.5", "data.rs_color_jitter_bands=[B2,B3,B13]"])
