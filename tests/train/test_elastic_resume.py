"""Resume at another worker count: 2 -> 1 workers (ZeRO-2) and 1 -> 2 workers (ZeRO-3), on CPU.

A run that never stops is compared with one that saves at step N and resumes with the
other worker count. The global batch of every step is the same in both (G tiles, split
over the workers), and the loss is the global-batch loss whatever the worker count
(gair.losses.contrastive), so the trajectories must agree: the resumed run's loss at steps
N and N+1 within a relative 1e-3 of the uninterrupted run's (reduction order differs
between 1 and 2 workers; a resume that lost the Adam moments, the queue or the LR schedule
is off by far more). Two worker processes are started with torch.multiprocessing (gloo).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch

from gair.configs import load_config
from gair.configs.train import PretrainConfig

pytestmark = pytest.mark.slow

GLOBAL_BATCH, SAVE_AT, TOTAL = 4, 2, 4
TINY = [
    "model.size=tiny",
    "model.rs_image_size=32",
    "model.sv_image_size=32",
    "model.location_rff_features=32",
    "data.obs_per_tile=2",
    "data.extra_points=2",
    "loss.queue_size=8",  # the queue wraps around before the save: its state matters
    "optim.warmup_steps=3",  # the LR schedule is still rising at the save: its state matters
    "optim.lr=1e-3",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _init(rank: int, world: int, port: int) -> None:
    import deepspeed
    import torch.distributed as dist

    if dist.is_initialized():
        assert dist.get_world_size() == world
        return
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    from gair.train.engine import skip_inference_shm_op

    skip_inference_shm_op(deepspeed)  # as the job does: no JIT build of an inference-only op
    deepspeed.init_distributed(dist_backend="gloo")


def trajectory(rank: int, world: int, stage: int, save_to: str = "", resume_from: str = "") -> dict:
    """Train to step TOTAL (from a checkpoint, if given); global losses by step, and the resumed state."""
    from gair.train import checkpoint
    from gair.train.loop import create_engine
    from tests.train._batches import random_batch

    torch.set_num_threads(1)
    per = GLOBAL_BATCH // world
    sets = [f"data.batch_size={per}", f"train.num_workers={world}", f"train.zero_stage={stage}"]
    cfg = load_config(PretrainConfig, None, TINY + sets + [f"train.max_steps={TOTAL}"])
    whole = load_config(PretrainConfig, None, TINY + [f"data.batch_size={GLOBAL_BATCH}"])
    engine = create_engine(cfg, torch.device("cpu"))
    state = checkpoint.restore(engine, resume_from) if resume_from else checkpoint.TrainState()
    out = {"resumed": {"step": state.step, "batches_in_epoch": state.batches_in_epoch}, "loss": {}}
    for step in range(state.step, TOTAL):
        batch = random_batch(whole, seed=step, rows=slice(rank * per, (rank + 1) * per))
        loss, metrics = engine(batch)
        engine.backward(loss)
        engine.step()
        out["loss"][step] = float(metrics["loss"])
        if save_to and step + 1 == SAVE_AT:
            checkpoint.save(engine, checkpoint.TrainState(step=SAVE_AT, batches_in_epoch=SAVE_AT), save_to, rank=rank)
    return out


def _spawned(rank: int, world: int, port: int, result: str, kwargs: dict) -> None:
    _init(rank, world, port)
    out = trajectory(rank, world, **kwargs)
    if rank == 0:
        Path(result).write_text(json.dumps(out))


def run_two_workers(tmp: Path, name: str, **kwargs) -> dict:
    import torch.multiprocessing as mp

    result = tmp / f"{name}.json"
    mp.start_processes(_spawned, args=(2, _free_port(), str(result), kwargs), nprocs=2, start_method="spawn")
    return {**json.loads(result.read_text())}


def run_one_worker(**kwargs) -> dict:
    _init(0, 1, _free_port())
    return json.loads(json.dumps(trajectory(0, 1, **kwargs)))  # same key types as the spawned runs


def _check(reference: dict, resumed: dict) -> None:
    steps = [str(s) for s in range(SAVE_AT, TOTAL)]
    assert sorted(resumed["loss"]) == steps
    for s in steps:
        assert resumed["loss"][s] == pytest.approx(reference["loss"][s], rel=1e-3), (s, reference, resumed)


def test_two_workers_resume_with_one(tmp_path):
    ckpt = tmp_path / "ckpt"
    reference = run_two_workers(tmp_path, "ref", stage=2, save_to=str(ckpt))
    resumed = run_one_worker(stage=2, resume_from=str(ckpt))
    assert resumed["resumed"] == {"step": SAVE_AT, "batches_in_epoch": SAVE_AT * 2}  # same samples consumed
    _check(reference, resumed)


def test_one_worker_resumes_with_two(tmp_path):
    ckpt = tmp_path / "ckpt"
    reference = run_one_worker(stage=3, save_to=str(ckpt))
    resumed = run_two_workers(tmp_path, "resumed", stage=3, resume_from=str(ckpt))
    assert resumed["resumed"] == {"step": SAVE_AT, "batches_in_epoch": SAVE_AT // 2}
    _check(reference, resumed)
