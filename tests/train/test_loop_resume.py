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
        self.seen: list[dict] = []

    def __call__(self, batch):
        self.seen.append(batch)
        return torch.tensor(1.0), {}

    def backward(self, loss) -> None:
        pass

    def step(self) -> None:
        self.steps += 1

    def get_lr(self):
        return [0.1]


def batches_for_epoch(epoch: int, skip_batches: int):
    return iter([{"epoch": epoch, "i": i} for i in range(skip_batches, BATCHES_PER_EPOCH)])


class _Reports:
    """The loop's reports: a copy of the state at each checkpoint, and the metrics-only ones."""

    def __init__(self) -> None:
        self.saved: list[checkpoint.TrainState] = []
        self.metrics_only: list[tuple[int, dict]] = []

    def __call__(self, state, metrics, with_checkpoint) -> None:
        if with_checkpoint:
            self.saved.append(checkpoint.TrainState(**vars(state)))
        else:
            self.metrics_only.append((state.step, metrics))


def _cfg(**overrides: str) -> PretrainConfig:
    keys = {"train.max_steps": "6", "train.checkpoint_every": "3", "train.log_every": "100", "optim.warmup_steps": "0"}
    keys.update(overrides)
    return load_config(PretrainConfig, None, [f"{k}={v}" for k, v in keys.items()])


def _run(cfg, state, engine=None, source=batches_for_epoch, **kw) -> _Reports:
    reports = _Reports()
    setup = loop.WorkerSetup(engine or _Engine(), torch.device("cpu"), 0, 1)
    loop.train_steps(cfg, setup, state, source, report=reports, **kw)
    return reports


def test_resume_from_a_checkpoint_at_the_end_of_an_epoch():
    """A checkpoint right after an epoch's last batch resumes into the next epoch (used to raise)."""
    cfg = _cfg()
    first = _run(cfg, checkpoint.TrainState()).saved[0]
    assert (first.step, first.epoch, first.batches_in_epoch) == (3, 0, 3)
    engine = _Engine()
    resumed = checkpoint.TrainState(**vars(first))
    _run(cfg, resumed, engine)
    assert resumed.step == 6 and resumed.epoch == 1 and engine.steps == 3


def test_resume_mid_epoch_skips_the_consumed_batches():
    cfg = _cfg(**{"train.checkpoint_every": "2"})
    first = _run(cfg, checkpoint.TrainState()).saved[0]
    assert (first.step, first.epoch, first.batches_in_epoch) == (2, 0, 2)
    engine = _Engine()
    resumed = checkpoint.TrainState(**vars(first))
    _run(cfg, resumed, engine)
    assert resumed.step == 6 and engine.steps == 4
    assert engine.seen[0] == {"epoch": 0, "i": 2}  # the batch after the checkpoint's, not the epoch's first


def test_an_empty_shard_is_a_clear_error():
    with pytest.raises(RuntimeError, match="gave no batch"):
        _run(_cfg(), checkpoint.TrainState(), source=lambda epoch, skip: iter([]))


def test_gradient_accumulation_spans_epochs_and_counts_samples():
    cfg = _cfg(**{"train.max_steps": "2", "train.grad_accum_steps": "2", "train.checkpoint_every": "1"})
    engine = _Engine()
    reports = _run(cfg, checkpoint.TrainState(), engine)
    assert engine.steps == 4  # engine.step() after every micro-batch
    assert [(s.step, s.epoch, s.batches_in_epoch) for s in reports.saved] == [(1, 0, 2), (2, 1, 1)]
    assert reports.saved[-1].samples_seen == 4 * cfg.data.batch_size
    assert [(b["epoch"], b["i"]) for b in engine.seen] == [(0, 0), (0, 1), (0, 2), (1, 0)]


def test_validation_cadence_and_reports():
    cfg = _cfg(**{"train.max_steps": "4", "train.val_every": "2", "train.checkpoint_every": "4"})
    calls = []

    def validate():
        calls.append(len(calls))
        return {"val_loss": float(len(calls))}

    reports = _run(cfg, checkpoint.TrainState(), validate=validate)
    assert len(calls) == 2  # at step 2 and at the last step (4)
    assert reports.metrics_only == [(2, {"val_loss": 1.0})]  # step 2: no checkpoint, metrics only
    assert [s.step for s in reports.saved] == [4]


class _NextOnly:
    """An iterator with ``__next__`` only, as ``gair.data.pipeline.TrainingBatches`` is."""

    def __init__(self, epoch: int, skip: int) -> None:
        self.items = iter(range(skip, BATCHES_PER_EPOCH))
        self.epoch = epoch

    def __next__(self):
        return {"epoch": self.epoch, "i": next(self.items)}


def test_a_batch_source_may_return_a_bare_iterator():
    engine = _Engine()
    state = checkpoint.TrainState()
    _run(_cfg(**{"train.max_steps": "4"}), state, engine, source=_NextOnly)
    assert [(b["epoch"], b["i"]) for b in engine.seen] == [(0, 0), (0, 1), (0, 2), (1, 0)]


def test_the_progress_line_counts_the_tiles_of_each_mixed_manifest(capsys):
    # data.train_manifests: every batch says each tile's source; the loop counts them, the model never sees them.
    cfg = _cfg(**{"data.train_manifests": "/d/naip/manifest:3,sv=/d/other/manifest:1", "train.log_every": "2"})

    def mixed(epoch: int, skip_batches: int):
        return iter([{"i": i, "source": torch.tensor([0, 0, 1, 0])} for i in range(skip_batches, 3)])

    engine, state = _Engine(), checkpoint.TrainState()
    _run(cfg, state, engine=engine, source=mixed)
    assert all("source" not in b for b in engine.seen)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert lines[0].endswith("src naip=6 sv=2") and lines[-1].endswith("src naip=18 sv=6")
    assert state.source_tiles == {"naip": 18, "sv": 6}  # so far, kept in the checkpointed state
