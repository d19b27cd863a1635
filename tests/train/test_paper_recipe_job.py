"""``jobs/pretrain.py --config configs/pretrain_paper.yaml`` at tiny size on CPU: CROMA start and
teachers from weight files in their real layouts, under ZeRO 2 and ZeRO 3."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from gair.configs.model import ModelConfig
from tests.conftest import REPO_ROOT
from tests.train._weights import write_croma, write_sv_teacher

pytestmark = pytest.mark.slow

TINY = ModelConfig(size="tiny", rs_image_size=32, sv_image_size=32)


def tiny_paper_sets(tmp, name: str, zero_stage: int, steps: int) -> list[str]:
    """The paper config scaled to a tiny model, 2 CPU workers and a few steps."""
    croma = write_croma(tmp / "CROMA_base.pt", TINY)
    sv = write_sv_teacher(tmp / "model.safetensors", TINY)
    return [
        "model.size=tiny", "model.rs_image_size=32", "model.sv_image_size=32", "model.location_rff_features=32",
        f"model.rs_init={croma}", f"model.sv_teacher={sv}", "loss.queue_size=64",
        "data.batch_size=8", "data.num_decode_workers=1", "data.num_cpus_per_decode=0.5", "data.decode_batch_size=8",
        "data.prefetch_batches=1", "data.shuffle_buffer=0", "optim.base_lr=0.05", "optim.warmup_steps=1",
        f"train.max_steps={steps}", "train.num_workers=2", "train.use_gpu=false", "train.cpus_per_worker=0.5",
        f"train.zero_stage={zero_stage}", "train.precision=fp32", "train.grad_accum_steps=1", "train.log_every=1",
        f"train.checkpoint_every={steps}", f"run.name={name}", f"run.storage_path={tmp / 'runs'}",
        f"run.synthetic_dir={tmp / 'synthetic'}", "run.synthetic_tiles=32", "mlflow.enabled=false",
    ]  # fmt: skip


def run_job(sets: list[str], timeout: float = 900) -> str:
    cmd = [sys.executable, "jobs/pretrain.py", "--config", "configs/pretrain_paper.yaml"]
    cmd += [a for s in sets for a in ("--set", s)]
    env = {**os.environ, "RAY_ADDRESS": "local", "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        pytest.fail(f"job failed (rc {proc.returncode}):\n{output[-6000:]}")
    return output


@pytest.mark.parametrize("zero_stage", [2, 3])
def test_paper_recipe_runs_with_croma_and_teachers(tmp_path, zero_stage):
    out = run_job(tiny_paper_sets(tmp_path, f"paper-z{zero_stage}", zero_stage, steps=2))
    assert re.search(r"rs_init .*CROMA_base.pt: 24 CROMA s2_encoder tensors placed; left out: \{'linear_input", out)
    assert "teachers: SV from" in out
    steps = re.findall(r"step (\d+)/2 loss=\S+ .*distill_rs=(\S+) distill_sv=(\S+)", out)
    assert {s for s, *_ in steps} == {"1", "2"}, out[-3000:]
    assert all(-0.2001 <= float(rs) < 0 for _, rs, _ in steps)  # the RS student starts as its teacher
    weights = load_file(tmp_path / "runs" / f"paper-z{zero_stage}" / "export" / "model.safetensors")
    assert "rs_encoder.norm.weight" in weights and not any("teacher" in k for k in weights)
