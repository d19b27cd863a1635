"""The per-worker training function that Ray Train runs on every worker.

In torchtitan's shape: :class:`EpochBatches` owns epochs and the data position,
:func:`train_step` consumes ``train.grad_accum_steps`` micro-batches for one optimizer
step, and :func:`train_steps` reads step -> maybe log -> maybe validate -> maybe
checkpoint. The batch source and the Ray Train reporter are passed in, so the loop runs
without Ray in tests.

Only this module (and ``gair.train.checkpoint``) calls ``ray.train.*`` inside workers.
DeepSpeed is imported inside the worker function: it JIT-builds ops and probes the
accelerator on import, which the driver does not need.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import ray.train
import ray.train.torch
import torch

from gair.configs import from_dict
from gair.configs.data import source_labels
from gair.configs.train import PretrainConfig
from gair.data import storage
from gair.data.pipeline import EpochBatchSource, iter_training_batches
from gair.distributed import all_true, broadcast_object, mean_across_workers
from gair.tracking import MetricsSink, RunHandle
from gair.train import checkpoint
from gair.train.engine import create_engine
from gair.train.errors import NonRetryableError
from gair.train.faults import maybe_kill_worker
from gair.train.progress import ProgressMeter, format_progress
from gair.train.validation import run_validation

Batch = dict[str, torch.Tensor]
# (epoch, batches to skip) -> that epoch's micro-batches from there: how the loop gets data.
BatchSource = Callable[[int, int], Iterator[Batch]]
# (state, metrics, with a checkpoint?) -> None: how the loop reports to Ray Train.
ReportFn = Callable[[checkpoint.TrainState, dict[str, float], bool], None]


@dataclass
class WorkerSetup:
    engine: Any  # deepspeed.DeepSpeedEngine
    device: torch.device
    rank: int
    world_size: int


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Entry point for ``TorchTrainer``: ``loop_config`` = {"cfg": resolved config dict, "mlflow": RunHandle | None,
    "train_splits": the :class:`gair.data.pipeline.EpochSplits` actor}."""
    cfg = from_dict(PretrainConfig, loop_config["cfg"])
    setup = build_engine(cfg)
    state = restore_latest(setup, cfg)
    sink = _metrics_sink(loop_config.get("mlflow"), setup.rank)
    if setup.rank == 0 and state.step:
        print(f"resumed from step {state.step} (epoch {state.epoch}, batch {state.batches_in_epoch})", flush=True)
    splits = loop_config.get("train_splits")
    if splits is not None:  # every epoch its own draw (gair.data.pipeline.EpochSplits)
        batches = EpochBatchSource(splits, cfg.data, cfg.model, rank=setup.rank, device=setup.device)
        batches.batches_left = max(cfg.train.max_steps - state.step, 0) * cfg.train.grad_accum_steps
    else:
        batches = shard_batches(cfg, ray.train.get_dataset_shard("train"), setup.device)
    validate = None
    if cfg.train.val_every:
        val_shard = ray.train.get_dataset_shard("val")
        validate = functools.partial(run_validation, cfg, setup.engine, val_shard, setup.device)
    try:
        train_steps(cfg, setup, state, batches, report=ray_report(setup), sink=sink, validate=validate)
    finally:
        if isinstance(batches, EpochBatchSource):
            # Drop a prefetched next epoch without waiting for its first batch: this worker's
            # process (and the thread with it) ends with the training function.
            batches.close(wait_s=0.0)


def build_engine(cfg: PretrainConfig) -> WorkerSetup:
    """The pretraining module wrapped by DeepSpeed, on this Ray Train worker's device."""
    ctx = ray.train.get_context()
    if cfg.train.use_gpu:
        device = ray.train.torch.get_device()
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(max(1, int(cfg.train.cpus_per_worker)))
    rank = ctx.get_world_rank()
    engine = create_engine(cfg, device, log=print if rank == 0 else lambda _: None)
    return WorkerSetup(engine, device, rank, ctx.get_world_size())


def restore_latest(setup: WorkerSetup, cfg: PretrainConfig) -> checkpoint.TrainState:
    """Load the run's newest checkpoint that verifies (a resumed run, or a restarted worker
    group), if any: rank 0 chooses it, every rank loads the same one."""
    run_uri = storage.join(cfg.run.storage_path, cfg.run.name)
    opts = storage.S3Options.from_config(cfg.data)
    choice = None
    if setup.rank == 0:
        try:
            name = checkpoint.choose_checkpoint(run_uri, ray.train.get_checkpoint(), opts=opts)
            choice = (name, checkpoint.list_checkpoints(run_uri, opts))
        except checkpoint.NonRetryableError as exc:
            choice = exc
    choice = broadcast_object(choice)
    if isinstance(choice, Exception):
        raise choice
    name, existing = choice
    checkpoint.remember_taken(existing)
    if name is None:
        return checkpoint.TrainState()
    return checkpoint.restore_verified(setup.engine, run_uri, name, opts)


def _metrics_sink(run: RunHandle | None, rank: int) -> MetricsSink | None:
    return MetricsSink(run) if rank == 0 and run is not None else None


class EmptyShardError(RuntimeError):
    """An epoch gave this worker no batch at all: training cannot make progress."""


class EpochBatches:
    """Micro-batches epoch after epoch; owns the data position (``state.epoch``, ``state.batches_in_epoch``).

    Each epoch's batches come from ``batches_for_epoch(epoch, skip_batches)``: the first
    epoch of a resumed run skips the batches its checkpoint had consumed, later ones start
    at 0. Workers move to the next epoch together: when any worker's epoch ends, every
    worker's does (one short shard must not leave the others in a collective).
    """

    def __init__(self, batches_for_epoch: BatchSource, state: checkpoint.TrainState, *, rank: int = 0) -> None:
        self.batches_for_epoch = batches_for_epoch
        self.state = state
        self.rank = rank
        self._epoch: Iterator[Batch] | None = None
        self._consumed_before = 0

    def __iter__(self) -> EpochBatches:
        return self

    def __next__(self) -> Batch:
        state = self.state
        while True:
            if self._epoch is None:
                self._epoch = self.batches_for_epoch(state.epoch, state.batches_in_epoch)
                self._consumed_before = state.batches_in_epoch
            batch = next(self._epoch, None)
            if all_true(batch is not None):
                state.batches_in_epoch += 1
                return batch
            # A resumed epoch whose batches were all consumed before the checkpoint yields nothing: move on.
            if state.batches_in_epoch == self._consumed_before == 0:
                raise EmptyShardError(f"the training shard of worker {self.rank} gave no batch")
            state.epoch += 1
            state.batches_in_epoch = 0
            self._epoch = None


def train_step(
    engine: Any, batches: Iterator[Batch], grad_accum_steps: int, meter: ProgressMeter, samples: int
) -> None:
    """One optimizer step: forward and backward over ``grad_accum_steps`` micro-batches.

    DeepSpeed's ``engine.step()`` runs after every micro-batch and steps the optimizer at
    the accumulation boundary (it is configured with ``grad_accum_steps``). ``samples``:
    tiles per micro-batch over all workers.
    """
    for _ in range(grad_accum_steps):
        start = time.perf_counter()
        batch = next(batches)
        meter.add_data_wait(time.perf_counter() - start)
        source = batch.pop("source", None)  # mixed manifests (data.train_manifests): counted, not trained on
        if source is not None:
            meter.add_sources(source)
        loss, metrics = engine(batch)
        engine.backward(loss)
        engine.step()
        meter.add(loss, metrics, samples)


def train_steps(
    cfg: PretrainConfig,
    setup: WorkerSetup,
    state: checkpoint.TrainState,
    batches_for_epoch: BatchSource,
    *,
    report: ReportFn,
    sink: MetricsSink | None = None,
    validate: Callable[[], dict[str, float]] | None = None,
) -> None:
    """Optimizer steps until ``train.max_steps``: step -> maybe log -> maybe validate -> maybe checkpoint.

    ``validate`` (all ranks) runs every ``train.val_every`` steps and at the last step; its
    metrics go into the step's report (a checkpoint report, or a metrics-only one) and every
    later checkpoint report carries the latest ones. ``report(state, metrics, checkpoint)``
    hands them to Ray Train (:func:`ray_report`).
    """
    t = cfg.train
    micro_samples = cfg.data.batch_size * setup.world_size
    batches = EpochBatches(batches_for_epoch, state, rank=setup.rank)
    meter = ProgressMeter()
    summary: dict[str, float] = {}  # the latest logging interval's metrics
    val_metrics: dict[str, float] = {}  # the latest validation, carried by every later report
    while state.step < t.max_steps:
        try:
            train_step(setup.engine, batches, t.grad_accum_steps, meter, micro_samples)
        except EmptyShardError as exc:
            raise NonRetryableError(
                f"{exc} of {cfg.data.batch_size} tiles: use more data, fewer workers or a smaller data.batch_size"
            ) from exc
        state.step += 1
        state.samples_seen += micro_samples * t.grad_accum_steps
        maybe_kill_worker(state.step, setup.rank, setup.world_size)
        last = state.step == t.max_steps
        if _due(state.step, t.log_every, last):
            summary = log_progress(cfg, setup, state, meter, sink)
            meter.reset()
        validated = validate is not None and _due(state.step, t.val_every, last)
        if validated:
            val_metrics = log_validation(cfg, setup, state, validate, sink)
        if _due(state.step, t.checkpoint_every, last):
            report(state, {**(summary if last else {}), **val_metrics}, True)
        elif validated:
            report(state, val_metrics, False)


def _due(step: int, every: int, last: bool) -> bool:
    return last or (every > 0 and step % every == 0)


def ray_report(setup: WorkerSetup) -> ReportFn:
    """Report to Ray Train: with a checkpoint (every worker saves its shards), or metrics only."""

    def report(state: checkpoint.TrainState, metrics: dict[str, float], with_checkpoint: bool) -> None:
        if with_checkpoint:
            checkpoint.report_with_checkpoint(setup.engine, state, metrics, rank=setup.rank)
        else:
            ray.train.report({**metrics, "step": state.step})

    return report


def shard_batches(cfg: PretrainConfig, shard: Any, device: torch.device) -> BatchSource:
    """The batch source of a Ray Train dataset shard: every epoch is a new pass over the same draws
    (training uses :class:`gair.data.pipeline.EpochBatchSource`: every epoch its own draw)."""

    def batches_for_epoch(epoch: int, skip_batches: int) -> Iterator[Batch]:
        return iter_training_batches(shard, cfg.data, cfg.model, device=device, skip_batches=skip_batches, epoch=epoch)

    return batches_for_epoch


def log_progress(
    cfg: PretrainConfig,
    setup: WorkerSetup,
    state: checkpoint.TrainState,
    meter: ProgressMeter,
    sink: MetricsSink | None,
) -> dict[str, float]:
    """Average the interval's metrics over workers; rank 0 prints them and logs them to MLflow."""
    local = meter.summary()
    samples_per_s = local.pop("samples_per_s")  # already counts every worker's samples
    labels = source_labels(cfg.data.train_manifests) if cfg.data.mixed else []
    counts = meter.source_counts()
    local.update({f"tiles_{label}": float(counts.get(i, 0)) for i, label in enumerate(labels)})
    summary = mean_across_workers(local)
    for label in labels:  # tiles of each source so far, over all workers (the mean times the workers)
        key = f"tiles_{label}"
        state.source_tiles[label] = state.source_tiles.get(label, 0) + round(summary[key] * setup.world_size)
        summary[key] = float(state.source_tiles[label])
    summary["samples_per_s"] = samples_per_s
    summary["lr"] = float(setup.engine.get_lr()[0])
    summary["epoch"] = float(state.epoch)
    if setup.rank == 0:
        print(format_progress(state.step, cfg.train.max_steps, summary), flush=True)
        if sink is not None:
            sink.log(state.step, summary)
    return summary


def log_validation(
    cfg: PretrainConfig,
    setup: WorkerSetup,
    state: checkpoint.TrainState,
    validate: Callable[[], dict[str, float]],
    sink: MetricsSink | None,
) -> dict[str, float]:
    """Validate (all ranks); rank 0 prints the metrics and logs them to MLflow."""
    start = time.perf_counter()
    metrics = validate()
    if setup.rank == 0:
        took = time.perf_counter() - start
        print(f"validation at {format_progress(state.step, cfg.train.max_steps, metrics)} ({took:.1f}s)", flush=True)
        if sink is not None:
            sink.log(state.step, metrics)
    return metrics
