"""Throughput of the job's Ray Train + DeepSpeed path on 1 worker against a plain PyTorch loop.

Both sides train ``GAIRPretrainModule`` with the same config, seed, batch size, precision
and one in-memory random batch (so the data plane is excluded from both):

- Ray Train + DeepSpeed: a fresh ``TorchTrainer`` run with 1 worker whose function is the
  job's own (``gair.train.loop.build_engine`` + ``train_steps``), with the data iterator
  replaced by the in-memory batch and the final checkpoint skipped. Its step time is the
  time from handing the loop a batch to its next request, so it includes the loop's
  per-step bookkeeping (end-of-shard all-reduce, metric accumulation).
- plain: ``torch.optim.AdamW`` (the job's parameter groups) + LR schedule + gradient
  clipping, ``torch.autocast`` for bf16/fp16, no DeepSpeed, no process-group calls of its own.

The two are interleaved step by step in the same worker process: every time the job's loop
asks for a batch, one plain step runs first. Both sides thus see the same machine load,
CPU priority (Ray starts workers at nice 15) and thread count, which on a shared machine
would otherwise dwarf the difference. Each side gets ``--warmup`` untimed steps; the
report is the median step time, samples/s and their ratio, plus the time Ray Train took to
start the worker and build the engine (not in the ratio).

    python bench/train_overhead.py                       # tiny, fp32, ZeRO-2, CPU (about a minute)
    python bench/train_overhead.py --size base --batch-size 64 --precision bf16 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import (  # noqa: E402
    bench_config,
    fit_on_ray_train,
    median_and_spread,
    random_batch,
    resolve_device,
    start_local_ray,
)

from gair.configs import to_dict  # noqa: E402
from gair.configs.train import PretrainConfig  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--size",
        default="tiny",
        choices=["tiny", "small", "base", "large"],
        help="model.size preset (tiny also shrinks the images to 32 px)",
    )
    p.add_argument("--batch-size", type=int, default=16, help="tiles per step")
    p.add_argument("--obs-per-tile", type=int, default=4, help="street views per tile (data.obs_per_tile, K)")
    p.add_argument(
        "--extra-points", type=int, default=16, help="extra random query points per tile (data.extra_points, M)"
    )
    p.add_argument("--steps", type=int, default=40, help="timed steps per side")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first, per side")
    p.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16", "fp16"],
        help="train.precision of both sides (the plain side autocasts bf16 and fp16)",
    )
    p.add_argument(
        "--zero-stage",
        type=int,
        default=2,
        choices=[0, 1, 2, 3],
        help="train.zero_stage of the DeepSpeed side (0: plain data parallel)",
    )
    p.add_argument(
        "--device", default="auto", choices=["auto", "cuda", "cpu"], help="auto: cuda when a GPU is visible, else cpu"
    )
    p.add_argument(
        "--cpus-per-worker",
        type=int,
        default=0,
        help="CPUs (torch threads) of the worker (0: all cores on CPU, else 1)",
    )
    p.add_argument("--verbose", action="store_true", help="show the Ray worker's output")
    return p.parse_args(argv)


def build_plain_step(cfg: PretrainConfig, device: torch.device) -> Callable[[dict[str, torch.Tensor]], None]:
    """One optimizer step of the plain loop: AdamW, LR schedule, clipping, autocast."""
    from gair.models.pretrain import GAIRPretrainModule
    from gair.train.optim import build_lr_schedule, build_optimizer

    torch.manual_seed(cfg.train.seed)  # the same initial weights as the engine's module
    module = GAIRPretrainModule(cfg.model, cfg.loss).to(device).train()
    optimizer = build_optimizer(module, cfg.optim, fused=device.type == "cuda")
    schedule = build_lr_schedule(optimizer, cfg.optim, cfg.train.max_steps)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.precision == "fp16")

    def step(batch: dict[str, torch.Tensor]) -> None:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss, _ = module(batch)
        scaler.scale(loss).backward()
        if cfg.train.grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.train.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()

    return step


class InterleavedBatches:
    """The loop's batch iterator: before handing out the batch, it runs one plain step.

    ``engine_s[i]``: from handing out batch i to the request of batch i+1 (the job's step);
    ``plain_s[i]``: the plain step run at request i.
    """

    def __init__(self, batch: dict[str, torch.Tensor], plain_step: Callable, device: torch.device) -> None:
        self.batch, self.plain_step, self.device = batch, plain_step, device
        self.engine_s: list[float] = []
        self.plain_s: list[float] = []
        self.first_request = 0.0
        self._handed_out: float | None = None

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __iter__(self) -> InterleavedBatches:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        self._sync()
        now = time.perf_counter()
        if self._handed_out is None:
            self.first_request = time.time()
        else:
            self.engine_s.append(now - self._handed_out)
        self.plain_step(self.batch)
        self._sync()
        self._handed_out = time.perf_counter()
        self.plain_s.append(self._handed_out - now)
        return self.batch


def ray_train_worker(loop_config: dict[str, Any]) -> None:
    """Per-worker function: the job's engine and loop fed from memory, interleaved with the plain loop."""
    import ray.train

    from gair.configs import from_dict
    from gair.train import checkpoint, loop

    started = time.time()
    cfg = from_dict(PretrainConfig, loop_config["cfg"])
    device = torch.device("cuda", torch.cuda.current_device()) if cfg.train.use_gpu else torch.device("cpu")
    plain_step = build_plain_step(cfg, device)  # before DeepSpeed touches anything
    setup = loop.build_engine(cfg)
    batches = InterleavedBatches(random_batch(cfg, setup.device), plain_step, setup.device)
    # The in-memory batches as every epoch's batches; step throughput only: no checkpoint reports.
    loop.train_steps(
        cfg, setup, checkpoint.TrainState(), lambda epoch, skip: batches, report=lambda state, metrics, ckpt: None
    )
    # The Ray here is local (start_local_ray): the worker shares the driver's file system.
    if ray.train.get_context().get_world_rank() == 0:
        result = {
            "engine_s": batches.engine_s,
            "plain_s": batches.plain_s,
            "worker_started": started,
            "first_request": batches.first_request,
            "niceness": os.nice(0),
            "threads": torch.get_num_threads(),
        }
        Path(loop_config["out"]).write_text(json.dumps(result))


def report_line(label: str, times: list[float], batch_size: int) -> str:
    median, lo, hi = median_and_spread(times)
    return f"{label:<30} {median:>10.4f} {lo:>9.4f} {hi:>9.4f} {batch_size / median:>10.2f}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    use_gpu = device.type == "cuda"
    cpus = args.cpus_per_worker or ((os.cpu_count() or 1) if not use_gpu else 1)
    # The loop runs max_steps engine steps and requests max_steps batches: the engine gives
    # max_steps - 1 intervals, the plain side max_steps steps.
    cfg = bench_config(
        args.size,
        batch_size=args.batch_size,
        obs_per_tile=args.obs_per_tile,
        extra_points=args.extra_points,
        precision=args.precision,
        zero_stage=args.zero_stage,
        use_gpu=use_gpu,
        num_workers=1,
        cpus_per_worker=cpus,
        steps=args.warmup + args.steps + 1,
    )
    import ray

    temp_dir = start_local_ray(num_cpus=cpus + 1, num_gpus=1 if use_gpu else 0, verbose=args.verbose)
    fit_start = time.time()
    with tempfile.TemporaryDirectory(prefix="gair-bench-") as storage:
        out = Path(storage) / "step_times.json"
        fit_on_ray_train(ray_train_worker, {"cfg": to_dict(cfg), "out": str(out)}, cfg, storage, "train-overhead")
        fit_s = time.time() - fit_start
        m = json.loads(out.read_text())
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)  # Ray's session logs of this run

    window = slice(args.warmup, args.warmup + args.steps)
    engine_s, plain_s = m["engine_s"][window], m["plain_s"][window]
    name = torch.cuda.get_device_name(device) if use_gpu else "cpu"
    b = cfg.data.batch_size
    print(f"device={name} threads={m['threads']} niceness={m['niceness']} size={args.size} "
          f"precision={args.precision} zero={args.zero_stage} batch={b} obs_per_tile={cfg.data.obs_per_tile} "
          f"extra_points={cfg.data.extra_points} warmup={args.warmup} steps={len(engine_s)}")  # fmt: skip
    print(f"{'path (interleaved, 1 worker)':<30} {'median_s':>10} {'p10_s':>9} {'p90_s':>9} {'samples/s':>10}")
    print(report_line("plain PyTorch (AdamW)", plain_s, b))
    print(report_line("Ray Train + DeepSpeed", engine_s, b))
    ratio = median_and_spread(plain_s)[0] / median_and_spread(engine_s)[0]
    fast = median_and_spread(plain_s)[1] / median_and_spread(engine_s)[1]  # p10: least disturbed by other load
    print(f"ratio samples_per_s ray_train_deepspeed/plain = {ratio:.3f} at the median "
          f"(step time {100 * (1 / ratio - 1):+.1f}%), {fast:.3f} at p10")  # fmt: skip
    print(f"ray train: {m['worker_started'] - fit_start:.1f}s from fit() to the worker function, "
          f"{m['first_request'] - m['worker_started']:.1f}s to build both models and the engine; "
          f"fit() {fit_s:.1f}s in all")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
