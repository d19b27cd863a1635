"""The job's DeepSpeed engine in one CPU process (gloo): ZeRO-3 built partitioned, native bf16,
activation checkpointing and torch.compile -- each against the plain stage-0 engine."""

from __future__ import annotations

import os
import socket

import pytest
import torch

from gair.configs import load_config
from gair.configs.train import PretrainConfig

pytestmark = pytest.mark.slow

TINY = [
    "model.size=tiny",
    "model.rs_image_size=32",
    "model.sv_image_size=32",
    "model.location_rff_features=32",
    "data.batch_size=2",
    "data.obs_per_tile=2",
    "data.extra_points=2",
    "loss.queue_size=16",
    "optim.warmup_steps=0",
    "train.num_workers=1",
]
STEPS = 3


@pytest.fixture(scope="module")
def process_group():
    """A one-process gloo group, as DeepSpeed needs one."""
    import deepspeed
    import torch.distributed as dist

    if not dist.is_initialized():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        from gair.train.engine import skip_inference_shm_op

        skip_inference_shm_op(deepspeed)  # as the job does: no JIT build of an inference-only op
        deepspeed.init_distributed(dist_backend="gloo")
    yield
    # Left up: DeepSpeed keeps its own handle on the group for the rest of the session.


def _losses(*sets: str) -> tuple[list[float], object]:
    from gair.train.engine import create_engine
    from tests.train._batches import random_batch

    torch.set_num_threads(1)
    cfg = load_config(PretrainConfig, None, TINY + list(sets))
    engine = create_engine(cfg, torch.device("cpu"))
    batch = random_batch(cfg)
    losses = []
    for _ in range(STEPS):
        loss, _ = engine(batch)
        engine.backward(loss)
        engine.step()
        losses.append(float(loss))
    return losses, engine


@pytest.fixture(scope="module")
def plain(process_group) -> list[float]:
    return _losses("train.zero_stage=0")[0]


def test_zero3_is_built_partitioned_and_trains_like_stage0(plain):
    """zero.Init + NILI built directly + timm's deferred init + the fp32-alias patch + sized
    buckets, with activation checkpointing: the same losses as stage 0."""
    from gair.distributed.zero import fp32_partition_is_aliased

    losses, engine = _losses("train.zero_stage=3", "train.activation_checkpointing=true")
    params = dict(engine.module.named_parameters())
    assert all(hasattr(p, "ds_id") for p in params.values()), "not built under zero.Init"
    assert params["model.nili.weight"].ds_numel == 64 * (9 * 64 + 2)
    assert fp32_partition_is_aliased(engine) is True, "stage 3 keeps a second fp32 partition"
    assert losses == pytest.approx(plain, rel=1e-4)
    assert losses[-1] < losses[0]


def test_native_bf16_keeps_coordinates_fp32(plain):
    losses, engine = _losses("train.zero_stage=2", "train.precision=bf16", "train.precision_mode=native")
    m = engine.module
    assert m.model.nili.weight.dtype == torch.bfloat16
    assert m.queue.lonlat.dtype == torch.float32
    assert m.model.location_encoder.branches[0].freqs.dtype == torch.float32
    assert losses == pytest.approx(plain, rel=0.05)
    assert losses[-1] < losses[0]


def test_compiled_encoders_train_like_eager(plain):
    losses, engine = _losses("train.zero_stage=2", "train.compile=true")
    assert engine.module.model.rs_encoder._compiled_call_impl is not None
    assert "_orig_mod" not in "".join(engine.module.state_dict())  # keys unchanged
    assert losses == pytest.approx(plain, rel=1e-4)


ENGINE_IN_A_TORCH_GROUP = """
import os, socket, sys
import torch, torch.distributed as dist
sys.path.insert(0, os.getcwd())
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
# The group as Ray Train makes it: torch's own (env://), DeepSpeed's comm backend not yet created.
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
dist.init_process_group("gloo", init_method="env://")
from deepspeed.comm import comm as ds_comm
from gair.configs import load_config
from gair.configs.train import PretrainConfig
from gair.train.engine import create_engine
from tests.train.test_engine import TINY
engine = create_engine(load_config(PretrainConfig, None, TINY), torch.device("cpu"))
print("backend", type(ds_comm.cdb).__name__, "shm op", ds_comm.cdb.shm_comm_op)
"""


def test_the_engine_builds_no_inference_shm_op(tmp_path):
    """DeepSpeed's comm backend, made by ``create_engine`` in a group that torch made (as under
    Ray Train), JIT-compiles nothing: its inference-only shared-memory op is not built."""
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    ext_dir = tmp_path / "torch_extensions"
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(ext_dir)}  # an empty JIT cache: a build would land here
    proc = subprocess.run([sys.executable, "-c", ENGINE_IN_A_TORCH_GROUP], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "backend TorchBackend shm op None" in proc.stdout, proc.stdout[-2000:]
    assert "built successfully" not in proc.stdout + proc.stderr
    assert not list(ext_dir.rglob("*.so")), list(ext_dir.rglob("*"))
