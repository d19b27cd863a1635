import subprocess
import sys

import pytest

from gair.configs import ConfigError, load_config
from gair.configs.train import PretrainConfig
from gair.distributed import build_deepspeed_config
from tests.conftest import REPO_ROOT

REQUIRED = [
    "data.train_manifest", "data.val_manifest", "train.max_steps", "train.num_workers", "train.use_gpu",
    "train.zero_stage", "run.name", "run.storage_path", "mlflow.tracking_uri", "mlflow.experiment",
]  # fmt: skip


def test_configs_load():
    smoke = load_config(PretrainConfig, REPO_ROOT / "configs/pretrain_smoke.yaml")
    assert smoke.train.num_workers == 2 and smoke.train.zero_stage == 2 and not smoke.train.use_gpu
    gpu = load_config(PretrainConfig, REPO_ROOT / "configs/pretrain_gpu.yaml")
    assert gpu.model.size == "base" and gpu.train.precision == "bf16" and gpu.train.use_gpu
    assert gpu.train.num_workers == 16 and gpu.train.cpus_per_worker <= 8


def test_unknown_key_and_bad_values_are_errors():
    with pytest.raises(ConfigError, match="max_step"):
        load_config(PretrainConfig, None, ["train.max_step=3"])
    with pytest.raises(ConfigError, match="fp16"):
        load_config(PretrainConfig, None, ["train.precision=fp16"])
    with pytest.raises(ConfigError, match="zero_stage"):
        load_config(PretrainConfig, None, ["train.zero_stage=4"])
    with pytest.raises(ConfigError, match="reserved"):
        load_config(PretrainConfig, None, ["mlflow.alias=latest"])


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_deepspeed_config(stage, precision):
    cfg = load_config(
        PretrainConfig, None, [f"train.zero_stage={stage}", f"train.precision={precision}", "train.grad_accum_steps=3"]
    )
    ds = build_deepspeed_config(cfg)
    assert ds["zero_optimization"]["stage"] == stage
    assert ds["train_batch_size"] == cfg.data.batch_size * 3 * cfg.train.num_workers
    assert ds["gradient_accumulation_steps"] == 3
    assert ds["torch_autocast"]["enabled"] == (precision == "bf16")


def test_help_lists_every_key():
    out = subprocess.run(
        [sys.executable, "jobs/pretrain.py", "--help"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    for key in REQUIRED + ["optim.lr", "optim.betas", "train.grad_clip", "run.keep_checkpoints", "mlflow.alias"]:
        assert f"  {key} = " in out, key


def test_unknown_key_on_the_command_line_exits_2():
    proc = subprocess.run(
        [sys.executable, "jobs/pretrain.py", "--config", "configs/pretrain_smoke.yaml", "--set", "train.nope=1"],
        cwd=REPO_ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2 and "unknown config key" in proc.stderr
