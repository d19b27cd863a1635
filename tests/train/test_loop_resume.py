"""The per-worker loop's epoch and resume bookkeeping, with a stand-in engine (no Ray, no DeepSpeed)."""

from __future__ import annotations

import pytest
import torch

from gair.configs import load_config
from gair.configs.train import PretrainConfig
from gair.train import checkpoint, loop

BATCHES_PER_EPOCH = 3


class _Engine:
    """Counts optimizer steps; the loop only needs these four methods."""

    def __init__(self) -> None:
        self.steps = 0

    def __call__(self, batch):
        return torch.tensor(1.0), {}

    def backward(self, loss) -> None:
        pass

    def step(self) -> None:
        self.steps += 1

    def get_lr(self):
        return [0.1]


@pytest.fixture
def saved(monkeypatch):
    saved: list[checkpoint.TrainState] = []
    batches = lambda shard, *a, skip_batches=0, **k: iter([{"i": i} for i in range(skip_batches, BATCHES_PER_EPOCH)])  # noqa: E731
    monkeypatch.setattr("gair.data.pipeline.iter_training_batches", batches)
    monkeypatch.setattr(
        checkpoint,
        "report_with_checkpoint",
        lambda engine, state, metrics, rank: saved.append(checkpoint.TrainState(**vars(state))),
    )
    return saved


def _cfg(**overrides: str) -> PretrainConfig:
    keys = {"train.max_steps": "6", "train.checkpoint_every": "3", "train.log_every": "100", "optim.warmup_steps": "0"}
    keys.update(overrides)
    return load_config(PretrainConfig, None, [f"{k}={v}" for k, v in keys.items()])


def test_resume_from_a_checkpoint_at_the_end_of_an_epoch(saved):
    """A checkpoint right after an epoch's last batch resumes into the next epoch (used to raise)."""
    cfg = _cfg()
    loop.train_steps(cfg, loop.WorkerSetup(_Engine(), torch.device("cpu"), 0, 1), checkpoint.TrainState(), None, None)
    first = saved[0]
    assert (first.step, first.epoch, first.batches_in_epoch) == (3, 0, 3)
    engine = _Engine()
    resumed = checkpoint.TrainState(**vars(first))
    loop.train_steps(cfg, loop.WorkerSetup(engine, torch.device("cpu"), 0, 1), resumed, None, None)
    assert resumed.step == 6 and resumed.epoch == 1 and engine.steps == 3


def test_resume_mid_epoch_skips_the_consumed_batches(saved):
    cfg = _cfg(**{"train.checkpoint_every": "2"})
    loop.train_steps(cfg, loop.WorkerSetup(_Engine(), torch.device("cpu"), 0, 1), checkpoint.TrainState(), None, None)
    first = saved[0]
    assert (first.step, first.epoch, first.batches_in_epoch) == (2, 0, 2)
    engine = _Engine()
    resumed = checkpoint.TrainState(**vars(first))
    loop.train_steps(cfg, loop.WorkerSetup(engine, torch.device("cpu"), 0, 1), resumed, None, None)
    assert resumed.step == 6 and engine.steps == 4


def test_an_empty_shard_is_a_clear_error(saved, monkeypatch):
    monkeypatch.setattr("gair.data.pipeline.iter_training_batches", lambda *a, **k: iter([]))
    with pytest.raises(RuntimeError, match="gave no batch"):
        loop.train_steps(
            _cfg(), loop.WorkerSetup(_Engine(), torch.device("cpu"), 0, 1), checkpoint.TrainState(), None, None
        )
