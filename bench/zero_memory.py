"""Peak memory per worker under DeepSpeed ZeRO stages 0-3, 2 workers, base-size model.

Each stage is a fresh Ray Train run (new worker processes) of the job's own engine
(``gair.train.loop.build_engine``: GAIRPretrainModule, the job's AdamW and LR schedule, the
DeepSpeed config built from the job's config) taking a few optimizer steps on a small
random batch. Every worker measures, for its own process:

- CPU: resident set size (RSS) before the model is built (torch, DeepSpeed, Ray imported);
  the peak RSS while building the engine (``deepspeed.initialize`` copies and flattens
  parameters, a transient); and the peak RSS during the optimizer steps alone (the kernel's
  high-water mark restarted after the build through ``/proc/self/clear_refs``), which is
  what training holds: parameters, gradients, optimizer states, ZeRO buffers, activations;
- GPU: ``torch.cuda.max_memory_allocated`` during the steps.

The batch is kept small (1 tile, 1 street view) so that the model states, which ZeRO
partitions, dominate; activations do not shrink with the stage.

    python bench/zero_memory.py                              # base, fp32, 2 CPU workers, stages 0-3
    python bench/zero_memory.py --device cuda --precision bf16 --batch-size 8   # needs 2 GPUs
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
    peak_rss_mib,
    random_batch,
    reset_peak_rss,
    resolve_device,
    rss_mib,
    start_local_ray,
)

from gair.configs import to_dict  # noqa: E402
from gair.configs.train import PretrainConfig  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="base", choices=["tiny", "small", "base", "large"])
    p.add_argument("--stages", type=int, nargs="+", default=[0, 1, 2, 3], choices=[0, 1, 2, 3])
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=1, help="tiles per step per worker")
    p.add_argument("--obs-per-tile", type=int, default=1)
    p.add_argument("--extra-points", type=int, default=4)
    p.add_argument("--steps", type=int, default=3, help="optimizer steps per stage")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    p.add_argument("--cpus-per-worker", type=int, default=1)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override")
    p.add_argument(
        "--zero-override",
        default="{}",
        metavar="JSON",
        help='merged into the DeepSpeed "zero_optimization" section, e.g. \'{"reduce_bucket_size": 5e7}\'',
    )
    p.add_argument("--verbose", action="store_true", help="show the Ray workers' output")
    return p.parse_args(argv)


def memory_worker(loop_config: dict[str, Any]) -> None:
    """Per-worker function: build the job's engine, take a few steps, gather memory figures."""
    import deepspeed  # noqa: F401 - imported before the baseline, as in the job's workers
    import torch.distributed as dist

    from gair.configs import from_dict
    from gair.train import loop

    cfg = from_dict(PretrainConfig, loop_config["cfg"])
    if loop_config["zero_override"]:
        build_config = loop.build_deepspeed_config

        def with_override(c: PretrainConfig) -> dict[str, Any]:
            ds = build_config(c)
            ds["zero_optimization"].update(loop_config["zero_override"])
            return ds

        loop.build_deepspeed_config = with_override  # what build_engine calls
    before = rss_mib()
    start = time.perf_counter()
    setup = loop.build_engine(cfg)
    build_s = time.perf_counter() - start
    build_peak = peak_rss_mib()
    train_peak_is_own = reset_peak_rss()
    if setup.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(setup.device)
    batch = random_batch(cfg, setup.device, seed=setup.rank)
    engine = setup.engine
    start = time.perf_counter()
    for _ in range(loop_config["steps"]):
        loss, _ = engine(batch)
        engine.backward(loss)
        engine.step()
    float(loss)  # wait for the device
    row = {
        "rank": setup.rank,
        "pid": os.getpid(),
        "rss_before_mib": before,
        "build_peak_mib": build_peak,
        "train_peak_mib": peak_rss_mib(),
        "train_peak_is_own": train_peak_is_own,
        "gpu_peak_mib": torch.cuda.max_memory_allocated(setup.device) / 2**20 if setup.device.type == "cuda" else None,
        "build_s": build_s,
        "step_s": (time.perf_counter() - start) / loop_config["steps"],
        "params": sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel() for p in engine.module.parameters()),
    }
    rows: list[Any] = [None] * setup.world_size
    dist.all_gather_object(rows, row)
    # The Ray here is local (start_local_ray): the workers share the driver's file system.
    if setup.rank == 0:
        Path(loop_config["out"]).write_text(json.dumps(rows))


def measure_stage(args: argparse.Namespace, stage: int, use_gpu: bool, storage: str) -> tuple[list[dict], float]:
    cfg = bench_config(
        args.size,
        batch_size=args.batch_size,
        obs_per_tile=args.obs_per_tile,
        extra_points=args.extra_points,
        precision=args.precision,
        zero_stage=stage,
        use_gpu=use_gpu,
        num_workers=args.num_workers,
        cpus_per_worker=args.cpus_per_worker,
        steps=args.steps,
        extra=args.set,
    )
    out = Path(storage) / f"zero{stage}.json"
    start = time.perf_counter()
    loop_config = {"cfg": to_dict(cfg), "out": str(out), "steps": args.steps, "zero_override": args.zero_override}
    fit_on_ray_train(memory_worker, loop_config, cfg, storage, f"zero-memory-{stage}")
    return json.loads(out.read_text()), time.perf_counter() - start


def print_table(results: dict[int, list[dict]], seconds: dict[int, float], use_gpu: bool) -> None:
    """stage x worker: RSS before, build peak, train peak, train peak - before; ratios to stage 0."""
    stage0 = {r["rank"]: r for r in results.get(0, [])}

    def vs0(r: dict, value: Callable[[dict], float]) -> str:
        ref = stage0.get(r["rank"])
        return f"{value(r) / value(ref):>6.3f}" if ref else f"{'-':>6}"

    def delta(r: dict) -> float:
        return r["train_peak_mib"] - r["rss_before_mib"]

    head = "stage worker  before_MiB  build_peak_MiB  train_peak_MiB  vs0  train-before_MiB  vs0"
    head += "  gpu_peak_MiB  vs0" if use_gpu else ""
    print(head + "  build_s  step_s  run_s")
    for stage, rows in results.items():
        for r in sorted(rows, key=lambda r: r["rank"]):
            line = (
                f"{stage:>5} {r['rank']:>6}  {r['rss_before_mib']:>10.0f}  {r['build_peak_mib']:>14.0f}  "
                f"{r['train_peak_mib']:>14.0f} {vs0(r, lambda x: x['train_peak_mib'])}  {delta(r):>16.0f} "
                f"{vs0(r, delta)}"
            )
            if use_gpu:
                line += f"  {r['gpu_peak_mib']:>12.0f} {vs0(r, lambda x: x['gpu_peak_mib'])}"
            print(line + f"  {r['build_s']:>7.1f}  {r['step_s']:>6.2f}  {seconds[stage]:>5.1f}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.zero_override = json.loads(args.zero_override)
    use_gpu = resolve_device(args.device).type == "cuda"
    if use_gpu and torch.cuda.device_count() < args.num_workers:
        raise SystemExit(f"--device cuda needs {args.num_workers} GPUs, found {torch.cuda.device_count()}")
    temp_dir = start_local_ray(
        num_cpus=args.num_workers * args.cpus_per_worker + 1,
        num_gpus=args.num_workers if use_gpu else 0,
        verbose=args.verbose,
    )
    results: dict[int, list[dict]] = {}
    seconds: dict[int, float] = {}
    pids: set[int] = set()
    with tempfile.TemporaryDirectory(prefix="gair-bench-") as storage:
        for stage in args.stages:
            results[stage], seconds[stage] = measure_stage(args, stage, use_gpu, storage)
            new = {r["pid"] for r in results[stage]}
            if new & pids:
                print(
                    f"warning: ZeRO-{stage} reused worker processes {sorted(new & pids)}; their peak includes earlier runs"
                )
            pids |= new
            print(f"ZeRO-{stage}: {seconds[stage]:.1f}s", flush=True)

    import ray

    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)  # Ray's session logs of this run
    first = results[args.stages[0]][0]
    print(f"\nsize={args.size} params={first['params'] / 1e6:.1f}M precision={args.precision} "
          f"workers={args.num_workers} batch={args.batch_size} obs_per_tile={args.obs_per_tile} "
          f"steps={args.steps} device={'cuda' if use_gpu else 'cpu'} zero_override={json.dumps(args.zero_override)}")  # fmt: skip
    print_table(results, seconds, use_gpu)
    if not all(r["train_peak_is_own"] for rows in results.values() for r in rows):
        print("note: the peak RSS could not be restarted after the build: train_peak includes the build")
    print(f"total {sum(seconds.values()):.1f}s for {len(args.stages)} stages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
