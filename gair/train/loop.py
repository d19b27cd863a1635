"""The per-worker training function that Ray Train runs on every worker.

Only this module (and ``gair.train.checkpoint``) calls ``ray.train.*`` inside workers.
DeepSpeed is imported inside the worker function: it JIT-builds ops and probes the
accelerator on import, which the driver does not need.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from gair.configs import from_dict
from gair.configs.train import PretrainConfig
from gair.distributed import all_true, build_deepspeed_config, mean_across_workers
from gair.tracking import MetricsSink, RunHandle
from gair.train import checkpoint
from gair.train.faults import maybe_kill_worker
from gair.train.optim import build_lr_schedule, build_optimizer
from gair.train.progress import ProgressMeter, format_progress


@dataclass
class WorkerSetup:
    engine: Any  # deepspeed.DeepSpeedEngine
    device: torch.device
    rank: int
    world_size: int


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Entry point for ``TorchTrainer``: ``loop_config`` = {"cfg": resolved config dict, "mlflow": RunHandle | None}."""
    import ray.train

    cfg = from_dict(PretrainConfig, loop_config["cfg"])
    setup = build_engine(cfg)
    state = restore_latest(setup)
    sink = _metrics_sink(loop_config.get("mlflow"), setup.rank)
    if setup.rank == 0 and state.step:
        print(f"resumed from step {state.step} (epoch {state.epoch}, batch {state.batches_in_epoch})", flush=True)
    shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val") if cfg.train.val_every else None
    train_steps(cfg, setup, state, shard, sink, val_shard)


def build_engine(cfg: PretrainConfig) -> WorkerSetup:
    """The pretraining module wrapped by DeepSpeed, with our AdamW and LR schedule."""
    import deepspeed
    import ray.train
    import ray.train.torch

    from gair.train.init import build_pretrain_module

    ctx = ray.train.get_context()
    if cfg.train.use_gpu:
        device = ray.train.torch.get_device()
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(max(1, int(cfg.train.cpus_per_worker)))
    torch.manual_seed(cfg.train.seed)  # same initial weights on every rank
    rank = ctx.get_world_rank()
    module = build_pretrain_module(cfg, log=print if rank == 0 else lambda _: None).to(device)
    optimizer = build_optimizer(module, cfg.optim, fused=cfg.train.use_gpu, peak_lr=cfg.peak_lr)
    schedule = build_lr_schedule(optimizer, cfg.optim, cfg.train.max_steps, peak_lr=cfg.peak_lr)
    engine, _, _, _ = deepspeed.initialize(
        model=module, optimizer=optimizer, lr_scheduler=schedule, config=build_deepspeed_config(cfg)
    )
    return WorkerSetup(engine, device, ctx.get_world_rank(), ctx.get_world_size())


def restore_latest(setup: WorkerSetup) -> checkpoint.TrainState:
    """Load the run's latest checkpoint (a resumed run, or a restarted worker group), if any."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return checkpoint.TrainState()
    with ckpt.as_directory() as directory:
        return checkpoint.restore(setup.engine, directory)


def _metrics_sink(run: RunHandle | None, rank: int) -> MetricsSink | None:
    return MetricsSink(run) if rank == 0 and run is not None else None


def train_steps(
    cfg: PretrainConfig,
    setup: WorkerSetup,
    state: checkpoint.TrainState,
    shard: Any,
    sink: Any,
    val_shard: Any = None,
) -> None:
    """Optimizer steps until ``train.max_steps``, epoch after epoch over the worker's shard.

    With ``train.val_every`` (and a ``val_shard``), validation runs every that many steps
    and at the last step; its metrics go into the step's ``ray.train.report`` (a checkpoint
    report, or a metrics-only one) and every later checkpoint report carries the latest ones.
    """
    import ray.train

    from gair.data.pipeline import iter_training_batches

    engine, t = setup.engine, cfg.train
    micro_samples = cfg.data.batch_size * setup.world_size
    meter = ProgressMeter()
    micro = 0  # micro-batches since the last optimizer step
    val_metrics: dict[str, float] = {}  # the latest validation, carried by every later report
    while state.step < t.max_steps:
        batches = iter_training_batches(
            shard, cfg.data, cfg.model, device=setup.device, skip_batches=state.batches_in_epoch
        )
        consumed_before = state.batches_in_epoch
        while state.step < t.max_steps:
            start = time.perf_counter()
            batch = next(batches, None)
            meter.add_data_wait(time.perf_counter() - start)
            # Workers stop an epoch together: one short shard must not leave others in a collective.
            if not all_true(batch is not None):
                break
            loss, metrics = engine(batch)
            engine.backward(loss)
            engine.step()
            state.batches_in_epoch += 1
            meter.add(loss, metrics, micro_samples)
            micro += 1
            if micro < t.grad_accum_steps:
                continue
            micro = 0
            state.step += 1
            state.samples_seen += micro_samples * t.grad_accum_steps
            maybe_kill_worker(state.step, setup.rank, setup.world_size)
            last = state.step == t.max_steps
            if state.step % t.log_every == 0 or last:
                summary = log_progress(cfg, setup, state, meter, sink)
                meter.reset()
            validated = val_shard is not None and (state.step % t.val_every == 0 or last)
            if validated:
                val_metrics = log_validation(cfg, setup, state, val_shard, sink)
            if state.step % t.checkpoint_every == 0 or last:
                metrics = {**(summary if last else {}), **val_metrics}
                checkpoint.report_with_checkpoint(engine, state, metrics, rank=setup.rank)
            elif validated:
                ray.train.report({**val_metrics, "step": state.step})
        # A resumed epoch whose batches were all consumed before the checkpoint yields nothing: move on.
        if state.batches_in_epoch == consumed_before == 0 and state.step < t.max_steps:
            raise RuntimeError(
                f"the training shard of worker {setup.rank} gave no batch of {cfg.data.batch_size} tiles: "
                "use more data, fewer workers or a smaller data.batch_size"
            )
        if state.step < t.max_steps:
            state.epoch += 1
            state.batches_in_epoch = 0


def log_progress(
    cfg: PretrainConfig, setup: WorkerSetup, state: checkpoint.TrainState, meter: ProgressMeter, sink: Any
) -> dict[str, float]:
    """Average the interval's metrics over workers; rank 0 prints them and logs them to MLflow."""
    local = meter.summary()
    samples_per_s = local.pop("samples_per_s")  # already counts every worker's samples
    summary = mean_across_workers(local)
    summary["samples_per_s"] = samples_per_s
    summary["lr"] = float(setup.engine.get_lr()[0])
    summary["epoch"] = float(state.epoch)
    if setup.rank == 0:
        print(format_progress(state.step, cfg.train.max_steps, summary), flush=True)
        if sink is not None:
            sink.log(state.step, summary)
    return summary


def log_validation(
    cfg: PretrainConfig, setup: WorkerSetup, state: checkpoint.TrainState, val_shard: Any, sink: Any
) -> dict[str, float]:
    """Validate (all ranks); rank 0 prints the metrics and logs them to MLflow."""
    from gair.train.validation import run_validation

    start = time.perf_counter()
    metrics = run_validation(cfg, setup.engine, val_shard, setup.device)
    if setup.rank == 0:
        took = time.perf_counter() - start
        print(f"validation at {format_progress(state.step, cfg.train.max_steps, metrics)} ({took:.1f}s)", flush=True)
        if sink is not None:
            sink.log(state.step, metrics)
    return metrics
