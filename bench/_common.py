"""Shared machinery of the training benchmarks: configs, a private local Ray, memory probes.

The benchmarks build the job's own objects (``gair.configs``, ``gair.train.loop.build_engine``)
and feed random batches in the contract layout (``bench/gpu_step.py``'s ``random_batch``),
so what they time is the training path without the data plane.
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from gair.configs import load_config  # noqa: E402
from gair.configs.train import PretrainConfig  # noqa: E402


def bench_config(
    size: str,
    *,
    batch_size: int,
    precision: str,
    zero_stage: int,
    use_gpu: bool,
    num_workers: int,
    obs_per_tile: int = 4,
    extra_points: int = 16,
    cpus_per_worker: float = 1.0,
    steps: int = 10,
    extra: list[str] | None = None,
) -> PretrainConfig:
    """The job's config for a benchmark run; ``tiny`` also shrinks the images (as the smoke config)."""
    sets = [
        f"model.size={size}",
        f"data.batch_size={batch_size}",
        f"data.obs_per_tile={obs_per_tile}",
        f"data.extra_points={extra_points}",
        f"train.precision={precision}",
        f"train.zero_stage={zero_stage}",
        f"train.use_gpu={str(use_gpu).lower()}",
        f"train.num_workers={num_workers}",
        f"train.cpus_per_worker={cpus_per_worker}",
        f"train.max_steps={steps}",
        f"train.log_every={steps}",  # progress (one all-reduce + print) only at the end
        f"train.checkpoint_every={steps}",
        "optim.warmup_steps=0",
        "mlflow.enabled=false",
    ]
    if size == "tiny":
        sets += ["model.rs_image_size=32", "model.sv_image_size=32", "model.location_rff_features=32"]
    return load_config(PretrainConfig, None, sets + list(extra or []))


def random_batch(cfg: PretrainConfig, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch in the layout of docs/contracts.md (``bench/gpu_step.py``'s construction)."""
    from gpu_step import random_batch as _random_batch

    return _random_batch(cfg, device, seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA device is visible")
    return torch.device("cuda", 0) if name == "cuda" else torch.device("cpu")


def start_local_ray(num_cpus: float, num_gpus: int, verbose: bool, env_vars: dict[str, str] | None = None) -> str:
    """A fresh local Ray (never an existing cluster), its temp dir private to this run.

    ``env_vars``: set in every Ray worker process (e.g. glibc malloc tunables, read at start).
    """
    import ray

    temp_dir = tempfile.mkdtemp(prefix="gb-", dir="/tmp")  # short: socket paths have a length limit
    ray.init(
        address="local",
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        include_dashboard=False,
        log_to_driver=verbose,
        configure_logging=verbose,
        runtime_env={"env_vars": env_vars} if env_vars else None,
        _temp_dir=temp_dir,
    )
    return temp_dir


def fit_on_ray_train(
    fn: Callable[[dict[str, Any]], None],
    loop_config: dict[str, Any],
    cfg: PretrainConfig,
    storage_path: str,
    name: str,
) -> Any:
    """One fresh Ray Train run of ``fn`` with the job's scaling (new worker processes); its Result."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    t = cfg.train
    trainer = TorchTrainer(
        fn,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if t.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=t.num_workers,
            use_gpu=t.use_gpu,
            resources_per_worker={"CPU": t.cpus_per_worker, **({"GPU": 1} if t.use_gpu else {})},
        ),
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage_path, failure_config=ray.train.FailureConfig(max_failures=0)
        ),
    )
    return trainer.fit()


def rss_mib() -> float:
    """Current resident set size of this process."""
    with open(f"/proc/{os.getpid()}/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    """Peak resident set size of this process since it started or since :func:`reset_peak_rss`."""
    try:
        with open(f"/proc/{os.getpid()}/status") as f:
            hwm_kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        return hwm_kib / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def reset_peak_rss() -> bool:
    """Restart the peak RSS from the current RSS (Linux >= 4.0); False where not possible."""
    try:
        with open(f"/proc/{os.getpid()}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def median_and_spread(values: list[float]) -> tuple[float, float, float]:
    """Median, and the 10th and 90th percentiles (min/max when there are few values)."""
    ordered = sorted(values)
    if len(ordered) < 10:
        return statistics.median(ordered), ordered[0], ordered[-1]
    deciles = statistics.quantiles(ordered, n=10)
    return statistics.median(ordered), deciles[0], deciles[-1]


def malloc_trim() -> bool:
    """Return glibc's free heap memory to the OS (``malloc_trim(0)``); False where not glibc."""
    import ctypes

    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False
