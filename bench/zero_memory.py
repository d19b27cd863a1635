"""Memory per worker under DeepSpeed ZeRO stages 0-3: model state held, and peak RSS.

Each (stage, worker count) is a fresh Ray Train run (new worker processes) of the job's
own engine (``gair.train.loop.build_engine``: the module built as the job builds it --
under ``deepspeed.zero.Init`` at stage 3 --, the job's AdamW and LR schedule, the DeepSpeed
config built from the job's config) taking a few optimizer steps on a small random batch.
Every worker measures, for its own process:

- model state: the bytes of the tensors the engine holds after the last backward pass
  (before its optimizer step: gradients are held, activations freed) -- parameters
  (or their ZeRO partitions), gradients, optimizer states, ZeRO's flat buffers and
  buckets, module buffers -- found by walking the engine, the module and the optimizer,
  counted once per storage (views and aliases share one);
- peak RSS during the steps: with glibc told to give freed memory back
  (``MALLOC_MMAP_THRESHOLD_`` in the workers' environment: large blocks are mmap-ed and
  unmapped on free) and ``malloc_trim(0)`` before the kernel's high-water mark is
  restarted (``/proc/self/clear_refs``), so the peak is what training holds at once, not
  what the allocator kept from the build;
- GPU: ``torch.cuda.max_memory_allocated`` during the steps.

The batch is small (1 tile, 1 street view) so that the model states, which ZeRO
partitions, dominate; activations do not shrink with the stage. Stage 0's model state does
not depend on the worker count: rows whose worker count has no stage-0 run are compared
with the stage-0 run of another count (marked ``*``).

    python bench/zero_memory.py                                          # base, fp32, 2 CPU workers, stages 0-3
    python bench/zero_memory.py --stages 0 3 --num-workers 2 4           # the issue-14 table
    python bench/zero_memory.py --size tiny --stages 0 3 --steps 2       # quick check
    python bench/zero_memory.py --launcher spawn --stages 0 3 --num-workers 2 4   # without Ray's processes
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
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import (  # noqa: E402
    bench_config,
    fit_on_ray_train,
    malloc_trim,
    peak_rss_mib,
    random_batch,
    reset_peak_rss,
    resolve_device,
    rss_mib,
    start_local_ray,
)

from gair.configs import to_dict  # noqa: E402
from gair.configs.train import PretrainConfig  # noqa: E402

MIB = 2**20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--size",
        default="base",
        choices=["tiny", "small", "base", "large"],
        help="model.size preset (tiny also shrinks the images to 32 px)",
    )
    p.add_argument(
        "--stages",
        type=int,
        nargs="+",
        default=[0, 1, 2, 3],
        choices=[0, 1, 2, 3],
        help="DeepSpeed ZeRO stages to measure, a fresh run each",
    )
    p.add_argument("--num-workers", type=int, nargs="+", default=[2], help="worker counts to run each stage with")
    p.add_argument("--batch-size", type=int, default=1, help="tiles per step per worker")
    p.add_argument("--obs-per-tile", type=int, default=1, help="street views per tile (data.obs_per_tile, K)")
    p.add_argument(
        "--extra-points", type=int, default=4, help="extra random query points per tile (data.extra_points, M)"
    )
    p.add_argument("--steps", type=int, default=3, help="optimizer steps per stage")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"], help="train.precision")
    p.add_argument(
        "--precision-mode",
        default="autocast",
        choices=["autocast", "native"],
        help="train.precision_mode: torch autocast, or DeepSpeed's native 16-bit parameters (ignored with fp32)",
    )
    p.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cuda", "cpu"],
        help="auto: cuda when a GPU is visible, else cpu; cuda needs a GPU per worker",
    )
    p.add_argument("--cpus-per-worker", type=int, default=1, help="also the torch threads per worker")
    p.add_argument(
        "--mmap-threshold",
        type=int,
        default=65536,
        help="MALLOC_MMAP_THRESHOLD_ (bytes) in the workers: freed large blocks go back to the OS (0: glibc default)",
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override")
    p.add_argument(
        "--zero-override",
        default="{}",
        metavar="JSON",
        help='merged into the DeepSpeed "zero_optimization" section, e.g. \'{"reduce_bucket_size": 5e7}\'',
    )
    p.add_argument(
        "--launcher",
        default="ray",
        choices=["ray", "spawn"],
        help="ray: Ray Train workers (the job's path); spawn: torch.multiprocessing + gloo, the same engine "
        "without Ray's processes (less memory on a crowded host)",
    )
    p.add_argument(
        "--results",
        default="",
        metavar="FILE",
        help="JSON file of measured rows: read first (those runs are skipped), written after every run; so the "
        "table can combine invocations (e.g. stage 0 at 2 workers, then stage 3 at 4 workers)",
    )
    p.add_argument("--verbose", action="store_true", help="show the Ray workers' output")
    return p.parse_args(argv)


def engine_state_bytes(engine: Any) -> dict[str, int]:
    """Bytes of the tensors an engine holds, by kind, each storage counted once.

    Walks the module (parameters, their ZeRO partitions ``ds_tensor``, gradients, buffers),
    the optimizer (its states; DeepSpeed's ZeRO optimizer wraps ours and holds the flat
    partitions and buckets) and the engine's own attributes, through dicts, lists and
    DeepSpeed/torch objects. A storage is attributed to the first kind that reaches it.
    """
    storages: dict[tuple[str, int], tuple[int, str]] = {}
    seen: set[int] = set()

    def add(t: torch.Tensor, kind: str) -> None:
        if t.device.type == "meta":
            return
        st = t.untyped_storage()
        if st.nbytes():
            storages.setdefault((str(t.device), st.data_ptr()), (st.nbytes(), kind))

    def walk(obj: Any, kind: str, depth: int = 0) -> None:
        if depth > 8 or id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            add(obj, kind)
            if obj.grad is not None:
                add(obj.grad, "grads")
            for value in vars(obj).values() if hasattr(obj, "__dict__") else ():
                walk(value, kind, depth + 1)  # ds_tensor (a ZeRO-3 partition) and friends
        elif isinstance(obj, torch.nn.Module):
            for p in obj.parameters():
                walk(p, "params", depth + 1)
            for b in obj.buffers():
                walk(b, "buffers", depth + 1)
        elif isinstance(obj, dict):
            for value in list(obj.values()):
                walk(value, kind, depth + 1)
        elif isinstance(obj, (list, tuple, set)):
            for value in list(obj):
                walk(value, kind, depth + 1)
        elif type(obj).__module__.startswith(("deepspeed", "torch.optim")) and hasattr(obj, "__dict__"):
            for value in list(vars(obj).values()):
                walk(value, kind, depth + 1)

    walk(engine.module, "params")
    inner = getattr(engine.optimizer, "optimizer", engine.optimizer)  # ZeRO wraps our AdamW
    walk(inner.state, "optimizer")
    walk(engine.optimizer, "zero_buffers")
    walk(engine, "zero_buffers")
    out: dict[str, int] = {}
    for nbytes, kind in storages.values():
        out[kind] = out.get(kind, 0) + nbytes
    return out


def memory_worker(loop_config: dict[str, Any]) -> None:
    """Per-worker function: build the job's engine, take a few steps, gather memory figures."""
    import deepspeed  # noqa: F401 - imported before the baseline, as in the job's workers
    import torch.distributed as dist

    from gair.configs import from_dict
    from gair.distributed.zero import fp32_partition_is_aliased
    from gair.train import engine, loop

    cfg = from_dict(PretrainConfig, loop_config["cfg"])
    if loop_config["zero_override"]:
        build_config = engine.build_deepspeed_config

        def with_override(c: PretrainConfig) -> dict[str, Any]:
            ds = build_config(c)
            ds["zero_optimization"].update(loop_config["zero_override"])
            return ds

        engine.build_deepspeed_config = with_override  # what create_engine calls
    before = rss_mib()
    start = time.perf_counter()
    if loop_config.get("launcher") == "spawn":  # process group already up (spawn_worker)
        setup = loop.WorkerSetup(
            engine.create_engine(cfg, torch.device("cpu")), torch.device("cpu"), dist.get_rank(), dist.get_world_size()
        )
    else:
        setup = loop.build_engine(cfg)
    build_s = time.perf_counter() - start
    build_peak = peak_rss_mib()
    batch = random_batch(cfg, setup.device, seed=setup.rank)
    malloc_trim()  # what the build left in glibc's free lists is not training's
    train_peak_is_own = reset_peak_rss()
    if setup.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(setup.device)
    engine = setup.engine
    start = time.perf_counter()
    for i in range(loop_config["steps"]):
        loss, _ = engine(batch)
        engine.backward(loss)
        if i == loop_config["steps"] - 1:
            # After the backward pass: gradients (or their reduced partitions) are held, activations freed.
            state = engine_state_bytes(engine)
        engine.step()
    float(loss)  # wait for the device
    step_s = (time.perf_counter() - start) / loop_config["steps"]
    train_peak = peak_rss_mib()
    row = {
        "rank": setup.rank,
        "pid": os.getpid(),
        "rss_before_mib": before,
        "build_peak_mib": build_peak,
        "train_peak_mib": train_peak,
        "train_peak_is_own": train_peak_is_own,
        "model_state_mib": sum(state.values()) / MIB,
        "state_by_kind_mib": {k: v / MIB for k, v in sorted(state.items())},
        "fp32_aliased": fp32_partition_is_aliased(engine),
        "zero_init": any(hasattr(p, "ds_id") for p in engine.module.parameters()) and cfg.train.zero_stage == 3,
        "gpu_peak_mib": torch.cuda.max_memory_allocated(setup.device) / MIB if setup.device.type == "cuda" else None,
        "build_s": build_s,
        "step_s": step_s,
        "params": sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel() for p in engine.module.parameters()),
    }
    rows: list[Any] = [None] * setup.world_size
    dist.all_gather_object(rows, row)
    # The Ray here is local (start_local_ray): the workers share the driver's file system.
    if setup.rank == 0:
        Path(loop_config["out"]).write_text(json.dumps(rows))


def spawn_worker(rank: int, world: int, port: int, threads: int, loop_config: dict[str, Any]) -> None:
    """torch.multiprocessing entry: a gloo process group, then :func:`memory_worker`."""
    import deepspeed

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(threads)
    from gair.train.engine import skip_inference_shm_op

    skip_inference_shm_op(deepspeed)  # as the job does: no JIT build of an inference-only op
    deepspeed.init_distributed(dist_backend="gloo")
    memory_worker(loop_config)


def measure(args: argparse.Namespace, stage: int, workers: int, use_gpu: bool, storage: str) -> list[dict]:
    cfg = bench_config(
        args.size,
        batch_size=args.batch_size,
        obs_per_tile=args.obs_per_tile,
        extra_points=args.extra_points,
        precision=args.precision,
        zero_stage=stage,
        use_gpu=use_gpu,
        num_workers=workers,
        cpus_per_worker=args.cpus_per_worker,
        steps=args.steps,
        extra=[f"train.precision_mode={args.precision_mode}", *args.set],
    )
    out = Path(storage) / f"zero{stage}-w{workers}.json"
    loop_config = {"cfg": to_dict(cfg), "out": str(out), "steps": args.steps, "zero_override": args.zero_override}
    if args.launcher == "spawn":
        import socket

        import torch.multiprocessing as mp

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        loop_config["launcher"] = "spawn"
        spawn_args = (workers, port, args.cpus_per_worker, loop_config)
        mp.start_processes(spawn_worker, args=spawn_args, nprocs=workers, start_method="spawn")
    else:
        fit_on_ray_train(memory_worker, loop_config, cfg, storage, f"zero-memory-{stage}-{workers}")
    return json.loads(out.read_text())


def print_table(results: dict[tuple[int, int], list[dict]], use_gpu: bool) -> None:
    """One line per (stage, workers): worker means; ratios to stage 0 (same worker count, else '*')."""

    def mean(rows: list[dict], key: str) -> float:
        return sum(r[key] for r in rows) / len(rows)

    stage0 = {w: rows for (s, w), rows in results.items() if s == 0}
    head = f"{'stage':>5} {'workers':>7} {'model_state_MiB':>15} {'vs0':>7} {'peak_MiB':>9} {'vs0':>7}"
    head += f" {'gpu_peak_MiB':>12} {'vs0':>7}" if use_gpu else ""
    print(head + "  build_peak_MiB  fp32_alias  zero_init  step_s")
    for (stage, workers), rows in sorted(results.items()):
        ref, mark = stage0.get(workers), " "
        if ref is None and stage0:
            ref, mark = next(iter(stage0.values())), "*"

        def vs0(key: str, rows=rows, ref=ref, mark=mark) -> str:
            return f"{mean(rows, key) / mean(ref, key):>6.3f}{mark}" if ref else f"{'-':>7}"

        line = (
            f"{stage:>5} {workers:>7} {mean(rows, 'model_state_mib'):>15.0f} {vs0('model_state_mib')} "
            f"{mean(rows, 'train_peak_mib'):>9.0f} {vs0('train_peak_mib')}"
        )
        if use_gpu:
            line += f" {mean(rows, 'gpu_peak_mib'):>12.0f} {vs0('gpu_peak_mib')}"
        alias = rows[0]["fp32_aliased"]
        print(
            line + f"  {mean(rows, 'build_peak_mib'):>14.0f}  {'-' if alias is None else str(alias):>10}"
            f"  {str(rows[0]['zero_init']):>9}  {mean(rows, 'step_s'):>6.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.zero_override = json.loads(args.zero_override)
    use_gpu = resolve_device(args.device).type == "cuda"
    most = max(args.num_workers)
    if use_gpu and torch.cuda.device_count() < most:
        raise SystemExit(f"--device cuda needs {most} GPUs, found {torch.cuda.device_count()}")
    env = {"OMP_NUM_THREADS": str(args.cpus_per_worker)}
    if args.mmap_threshold:
        env["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)
    if args.launcher == "spawn":
        if use_gpu:
            raise SystemExit("--launcher spawn is CPU only")
        os.environ.update(env)  # read by glibc and OpenMP when the spawned workers start
        temp_dir = ""
    else:
        temp_dir = start_local_ray(
            num_cpus=most * args.cpus_per_worker + 1,
            num_gpus=most if use_gpu else 0,
            verbose=args.verbose,
            env_vars=env,
        )
    results: dict[tuple[int, int], list[dict]] = {}
    if args.results and Path(args.results).is_file():
        saved = json.loads(Path(args.results).read_text())
        results = {(int(k.split("x")[0]), int(k.split("x")[1])): v for k, v in saved.items()}
    pids: set[int] = set()
    total = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gair-bench-") as storage:
        for workers in args.num_workers:
            for stage in args.stages:
                if (stage, workers) in results:
                    print(f"ZeRO-{stage} x{workers}: from {args.results}")
                    continue
                start = time.perf_counter()
                rows = results[(stage, workers)] = measure(args, stage, workers, use_gpu, storage)
                new = {r["pid"] for r in rows}
                if new & pids:
                    print(f"warning: ZeRO-{stage} reused worker processes {sorted(new & pids)}")
                pids |= new
                if args.results:
                    Path(args.results).write_text(json.dumps({f"{s}x{w}": v for (s, w), v in results.items()}))
                print(f"ZeRO-{stage} x{workers}: {time.perf_counter() - start:.1f}s", flush=True)
                for r in sorted(rows, key=lambda r: r["rank"]):
                    print(f"  rank {r['rank']}: state {json.dumps({k: round(v) for k, v in r['state_by_kind_mib'].items()})} MiB")  # fmt: skip

    if temp_dir:
        import ray

        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)  # Ray's session logs of this run
    first = next(iter(results.values()))[0]
    print(f"\nsize={args.size} params={first['params'] / 1e6:.1f}M precision={args.precision} "
          f"mode={args.precision_mode} batch={args.batch_size} obs_per_tile={args.obs_per_tile} "
          f"steps={args.steps} device={'cuda' if use_gpu else 'cpu'} threads/worker={args.cpus_per_worker} "
          f"launcher={args.launcher} "
          f"MALLOC_MMAP_THRESHOLD_={args.mmap_threshold or 'default'} "
          f"zero_override={json.dumps(args.zero_override)}")  # fmt: skip
    print_table(results, use_gpu)
    if not all(r["train_peak_is_own"] for rows in results.values() for r in rows):
        print("note: the peak RSS could not be restarted after the build: peak includes the build")
    print(f"total {time.perf_counter() - total:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
