"""Ingest benchmark: Ray Data pipeline vs a torch DataLoader vs single-process decode x cores.

Starts a local S3-compatible server (moto, loopback) unless --endpoint is given, writes a
synthetic dataset of --tiles tiles and one --scale times larger, then prints:
- samples/s (a sample is one visit of a tile with its K street views) of the Ray Data pipeline
  (``build_dataset`` + ``iter_training_batches``) reading from S3;
- samples/s of a torch DataLoader with the same decode code (``decode.decode_rows``) and
  the same worker count, streaming the same Parquet row groups from S3, decoding as many rows
  at a time (--decode-batch-size), and the same consumer work: batches of --batch-size samples
  with street views normalized in the consuming process, as ``iter_training_batches`` gives;
- the single-process decode rate (rows already in memory) times the cores used: the
  ceiling for decode-bound ingest, measured before and after the loaders in each repeat;
- for both loaders, the start-up (seconds to the first batch) apart from the steady rate;
- peak memory (sum of PSS of the measuring process and all its children, Ray workers and
  object store included) streaming the 1x and the --scale x dataset: streaming keeps it flat.
  Memory is sampled in Ray Data passes of its own, never in a timed pass (sampling a Ray
  process tree costs the consuming process ~20% of a core).

Each Ray Data pass runs in its own process with its own local Ray (``--measure-ray``), so
that ``--baseline REF`` can run the same pass with the ``gair`` of another git commit (the
code before a change) in the same run, on the same data: it prints the new/old ratio (the
child runs in that commit's tree, so that its Ray workers, where decode runs, import that
``gair`` too; each pass checks it).

The loaders take turns ``--repeats`` times, the one that goes first alternating, between two
decode passes for the ceiling: one pass of a few hundred rows is too noisy to divide by, and
the machine's speed drifts over minutes (single passes varied from 34 to 84 rows/s between
runs, and by up to 27% within one). Two sets of ratios are printed: medians of each loader's
passes against each other, and the paired ratios (each repeat's Ray Data pass against that
repeat's DataLoader pass and ceiling, minutes apart at most) with their median and range.

    python bench/ingest.py --tiles 200 --scale 10 --baseline 397ae17
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# GAIR_BENCH_SRC: the source tree whose ``gair`` a --measure-ray pass imports (--baseline sets it).
sys.path.insert(0, os.environ.get("GAIR_BENCH_SRC") or str(REPO))

import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402

import psutil  # noqa: E402

from gair.configs.data import DataConfig  # noqa: E402
from gair.configs.model import ModelConfig  # noqa: E402
from gair.data import decode, manifest, pipeline, synthetic, transforms  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiles", type=int, default=64, help="tiles of the 1x dataset")
    p.add_argument("--scale", type=int, default=10, help="size factor of the large dataset (memory check)")
    p.add_argument(
        "--obs-per-tile",
        type=int,
        default=4,
        help="street views per tile of the datasets and per sample (data.obs_per_tile, K)",
    )
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="decode workers / cores")
    p.add_argument("--batch-size", type=int, default=16, help="samples per training batch, both loaders")
    p.add_argument("--decode-batch-size", type=int, default=0,
                   help="rows a worker decodes at a time, both loaders (data.decode_batch_size; 0: --batch-size)")  # fmt: skip
    p.add_argument("--endpoint", default="", help="S3 endpoint to use instead of starting moto")
    p.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="passes of each loader, taken in turns (medians printed); the ceiling takes 2x as many",
    )
    p.add_argument("--baseline", default="",
                   help="a git ref (e.g. the commit before a change): its Ray Data pipeline is measured too, "
                        "in the same run on the same data, and the new/old ratio printed")  # fmt: skip
    p.add_argument("--measure-ray", nargs=2, metavar=("SMALL_URI", "BIG_URI"), help=argparse.SUPPRESS)
    p.add_argument("--json-out", help=argparse.SUPPRESS)
    p.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args()


def start_moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, endpoint
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("moto did not start")


class PeakMemory:
    """Samples the summed PSS of this process tree in a thread; ``.peak`` in bytes."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        root = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error, AttributeError):  # a worker may exit meanwhile
                    total += p.memory_full_info().pss
            self.peak = max(self.peak, total)
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def steady_rate(batches, start: float) -> tuple[float, float, int, float]:
    """(samples/s end to end, samples/s after the first batch, samples, seconds to the first batch)."""
    n, first_t, first_n = 0, None, 0
    for b in batches:
        n += len(b["rs"])
        if first_t is None:
            first_t, first_n = time.perf_counter(), n
    end = time.perf_counter()
    steady = (n - first_n) / (end - first_t) if first_t is not None and end > first_t else float("nan")
    return n / (end - start), steady, n, (first_t or end) - start


def run_ray(
    uri: str, data_cfg: DataConfig, model_cfg: ModelConfig, *, memory: bool = False
) -> tuple[float, float, int, float, int]:
    """(samples/s, steady samples/s, samples, start-up s, peak bytes or 0) of the Ray Data pipeline over one pass.

    ``memory``: sample the peak memory meanwhile. Only in passes that are not timed: one sample
    of a Ray process tree costs ~50-60 ms of CPU (the kernel walks each process's mappings,
    the object store's included), 4 times a second, in the consuming process.
    """
    with PeakMemory() if memory else contextlib.nullcontext() as mem:
        start = time.perf_counter()
        ds = pipeline.build_dataset(uri, data_cfg, model_cfg, train=True)
        rate, steady, n, startup = steady_rate(pipeline.iter_training_batches(ds, data_cfg, model_cfg), start)
    return rate, steady, n, startup, mem.peak if mem is not None else 0


def run_dataloader(
    uri: str, spec: decode.DecodeSpec, workers: int, batch_size: int, data_cfg: DataConfig
) -> tuple[float, float, int, float]:
    """(samples/s, steady samples/s, samples, start-up s) of a torch DataLoader streaming row groups with the
    same decode, and the same consumer work as ``iter_training_batches`` (street views normalized there)."""
    import torch
    import torch.utils.data as tud

    class Manifest(tud.IterableDataset):
        def __iter__(self):  # each worker takes every n-th row batch
            info = tud.get_worker_info()
            wid, n = (info.id, info.num_workers) if info else (0, 1)
            torch.set_num_threads(1)
            for i, rows in enumerate(manifest.iter_manifest_rows(uri, spec.s3, batch_rows=batch_size)):
                if i % n == wid:
                    out = decode.decode_rows(rows, spec)
                    yield {k: out[k] for k in pipeline.SAMPLE_KEYS}

    def consume(loader):  # batches of data.batch_size, as the trainer takes them (and as the Ray Data side gives)
        size, pending, n_pending = data_cfg.batch_size, [], 0
        for item in loader:
            pending.append({k: torch.as_tensor(v) for k, v in item.items()})
            n_pending += len(pending[-1]["rs"])
            while n_pending >= size:
                merged = (
                    pending[0] if len(pending) == 1 else {k: torch.cat([p[k] for p in pending]) for k in pending[0]}
                )
                b = {k: v[:size] for k, v in merged.items()}
                rest = {k: v[size:] for k, v in merged.items()}
                pending, n_pending = ([rest] if len(rest["rs"]) else []), n_pending - size
                b["sv"] = transforms.normalize_sv(b["sv"], b["sv_mask"], data_cfg.sv_mean, data_cfg.sv_std)
                yield b  # a short last batch is dropped, as on the Ray Data side

    start = time.perf_counter()
    loader = tud.DataLoader(
        Manifest(), batch_size=None, num_workers=workers, prefetch_factor=2, persistent_workers=False
    )
    return steady_rate(consume(loader), start)


def ceiling_rows(uri: str, spec: decode.DecodeSpec) -> list[dict]:
    """The rows of ``uri`` in memory for :func:`run_single`, imports and caches warmed up."""
    import torch

    torch.set_num_threads(1)
    rows = [r for b in manifest.iter_manifest_rows(uri, spec.s3) for r in b]
    decode.decode_rows(rows[:2], spec)
    return rows


def run_single(rows: list[dict], spec: decode.DecodeSpec, passes: int) -> list[float]:
    """Rows/s of decode alone in this process (``rows`` already in memory), one figure per pass."""
    rates = []
    for _ in range(passes):
        start = time.perf_counter()
        decode.decode_rows(rows, spec)
        rates.append(len(rows) / (time.perf_counter() - start))
    return rates


def bench_configs(args: argparse.Namespace) -> tuple[DataConfig, ModelConfig]:
    model_cfg = ModelConfig()  # the paper's sizes: RS 96 px, SV 224 px
    data_cfg = DataConfig(batch_size=args.batch_size, obs_per_tile=args.obs_per_tile, num_decode_workers=args.workers,
                          decode_batch_size=args.decode_batch_size or args.batch_size, shuffle_buffer=0,
                          max_bad_fraction=0.0)  # fmt: skip
    return data_cfg, model_cfg


def measure_ray(args: argparse.Namespace) -> int:
    """One process, one private local Ray: a warm-up pass over the 1x data, the timed pass over the
    large data and (--memory) a pass over each with the memory sampler; the figures go to --json-out."""
    import ray

    small, big = args.measure_ray
    data_cfg, model_cfg = bench_configs(args)
    # The trainer is not running here: the pipeline gets exactly the decode workers' CPUs.
    # address="local": a private instance, not a `ray start` cluster that may run on this machine.
    ray.init(address="local", num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    try:
        check_workers_import_this_gair()
        _, _, n1, _, _ = run_ray(small, data_cfg, model_cfg)  # warm-up: worker processes and imports
        rate, steady, n, startup, _ = run_ray(big, data_cfg, model_cfg)
        mem1 = mem = 0
        if args.memory:  # apart from the timed pass: sampling memory costs CPU
            mem1 = run_ray(small, data_cfg, model_cfg, memory=True)[4]
            mem = run_ray(big, data_cfg, model_cfg, memory=True)[4]
    finally:
        ray.shutdown()
    Path(args.json_out).write_text(json.dumps(dict(rate=rate, steady=steady, n=n, startup=startup, n1=n1,
                                                   mem1=mem1, mem=mem)))  # fmt: skip
    return 0


def _gair_file() -> str:
    import gair

    return str(Path(gair.__file__).resolve())


def check_workers_import_this_gair() -> None:
    """Raise unless a Ray worker imports the ``gair`` this process imported (the tree measured)."""
    import ray

    def gair_file() -> str:  # defined here: pickled by value (a worker cannot import this script)
        import gair

        return str(Path(gair.__file__).resolve())

    mine, theirs = _gair_file(), ray.get(ray.remote(gair_file).remote())
    if mine != theirs:
        raise RuntimeError(f"the Ray workers import {theirs}, not the measured {mine}")


def pass_env(src: str | None) -> tuple[dict[str, str], str]:
    """(environment, working directory) of a --measure-ray child measuring the ``gair`` of ``src``
    (None: this tree). The working directory is the tree itself: Ray puts the driver's working
    directory first on its workers' ``sys.path``, so from anywhere else the workers would import
    another ``gair`` than the driver (the baseline's driver with this tree's decode)."""
    env = dict(os.environ)
    if src:
        env.update(GAIR_BENCH_SRC=src, PYTHONPATH=os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")])))
    return env, src or str(REPO)


def ray_pass(args: argparse.Namespace, small: str, big: str, src: str | None, *, memory: bool = False) -> dict:
    """A --measure-ray pass in a child process; ``src``: the source tree of its ``gair`` (None: this one);
    ``memory``: with the memory passes."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ray.json"
        env, cwd = pass_env(src)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--measure-ray", small, big, "--json-out", str(out),
               "--workers", str(args.workers), "--batch-size", str(args.batch_size),
               "--decode-batch-size", str(args.decode_batch_size),
               "--obs-per-tile", str(args.obs_per_tile)] + (["--memory"] if memory else [])  # fmt: skip
        subprocess.run(cmd, env=env, cwd=cwd, check=True)
        return json.loads(out.read_text())


def resolve_commit(ref: str) -> str | None:
    """The commit id of git ``ref`` in this repository, or None when it names no commit here."""
    proc = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
                          capture_output=True, text=True)  # fmt: skip
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


def checkout(ref: str, into: Path) -> str:
    """The tree of git ``ref`` of this repository, written under ``into``; returns its path."""
    sha = resolve_commit(ref)
    if sha is None:
        raise ValueError(f"--baseline {ref!r} names no commit of {REPO}")
    dest = into / sha[:12]
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", sha], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return str(dest)


def main() -> int:
    args = parse_args()
    if args.measure_ray:
        return measure_ray(args)
    if args.baseline and resolve_commit(args.baseline) is None:  # before minutes of writing tiles
        print(f"error: --baseline {args.baseline!r} names no commit of {REPO} (try a hash from `git log`)",
              file=sys.stderr)  # fmt: skip
        return 2
    moto = None
    if args.endpoint:
        os.environ["AWS_ENDPOINT_URL"] = args.endpoint
    else:
        moto, endpoint = start_moto()
        os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                          AWS_DEFAULT_REGION="us-east-1")  # fmt: skip
    try:
        return bench(args)
    finally:
        if moto is not None:
            moto.terminate()
            moto.wait(timeout=10)


def bench(args: argparse.Namespace) -> int:
    baseline_dir = Path(tempfile.mkdtemp(prefix="gair-bench-src-"))
    try:
        baseline = checkout(args.baseline, baseline_dir) if args.baseline else None
        return _bench(args, baseline)
    finally:
        shutil.rmtree(baseline_dir, ignore_errors=True)


def _bench(args: argparse.Namespace, baseline: str | None) -> int:
    import boto3

    bucket = f"gair-bench-{os.getpid()}"
    boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).create_bucket(Bucket=bucket)
    t = time.perf_counter()
    small = synthetic.write_synthetic(f"s3://{bucket}/x1", tiles=args.tiles, obs_per_tile=args.obs_per_tile, seed=0)
    print(f"wrote {args.tiles} tiles to S3 in {time.perf_counter() - t:.1f}s", flush=True)
    data_cfg, model_cfg = bench_configs(args)
    spec = pipeline.decode_spec(data_cfg, model_cfg, train=True)
    t = time.perf_counter()
    big = synthetic.write_synthetic(f"s3://{bucket}/x{args.scale}", tiles=args.tiles * args.scale,
                                    obs_per_tile=args.obs_per_tile, seed=1)  # fmt: skip
    print(f"wrote {args.tiles * args.scale} tiles in {time.perf_counter() - t:.1f}s", flush=True)

    rows = ceiling_rows(small, spec)
    singles: list[float] = []
    runs: dict[str, list] = {"ray": [], "dataloader": [], "baseline": []}
    paired: dict[str, list[float]] = {"dataloader": [], "ceiling": []}
    for r in range(args.repeats):  # all take turns, the ceiling too: a slow minute on the machine hits all of them
        singles += run_single(rows, spec, passes=1)
        # The loaders alternate which goes first, so that neither always meets the machine's next minute.
        for loader in ("dataloader", "ray") if r % 2 == 0 else ("ray", "dataloader"):
            if loader == "dataloader":
                runs["dataloader"].append(run_dataloader(big, spec, args.workers, data_cfg.decode_batch_size, data_cfg))
            else:
                runs["ray"].append(ray_pass(args, small, big, None, memory=r == 0))  # memory: measured once
                if baseline:
                    runs["baseline"].append(ray_pass(args, small, big, baseline))
        singles += run_single(rows, spec, passes=1)
        ray_rate, dl_rate = runs["ray"][-1]["rate"], runs["dataloader"][-1][0]
        paired["dataloader"].append(ray_rate / dl_rate)
        paired["ceiling"].append(ray_rate / (statistics.fmean(singles[-2:]) * args.workers))
        print(f"repeat {r + 1}/{args.repeats}: decode alone {', '.join(f'{x:.1f}' for x in singles[-2:])} rows/s, "
              f"dataloader {dl_rate:.1f}/s, ray {ray_rate:.1f}/s"
              + (f", baseline {runs['baseline'][-1]['rate']:.1f}/s" if baseline else "")
              + f"; this repeat: Ray/DataLoader {paired['dataloader'][-1]:.2f}, "
                f"Ray/ceiling {paired['ceiling'][-1]:.2f}", flush=True)  # fmt: skip

    med = statistics.median
    ceiling = med(singles) * args.workers
    ray = {k: med(x[k] for x in runs["ray"]) for k in ("rate", "steady", "startup")}
    dl_rate, dl_steady, dl_start = (med(x[i] for x in runs["dataloader"]) for i in (0, 1, 3))
    n = runs["ray"][0]["n"]
    print(
        f"\ningest of {n} samples ({args.tiles * args.scale} tiles) from S3 (moto on loopback), "
        f"{args.workers} decode workers, RS {model_cfg.rs_image_size}px, SV {model_cfg.sv_image_size}px, "
        f"K={args.obs_per_tile}, B={args.batch_size}, decode {data_cfg.decode_batch_size} rows at a time; "
        f"medians of {args.repeats} passes each"
    )
    print(f"{'pipeline':<48}{'samples/s':>10}{'vs ceiling':>11}{'start-up s':>11}{'steady/s':>10}")
    rows = [
        ("Ray Data (build_dataset + iter_training_batches)", ray["rate"], ray["startup"], ray["steady"]),
        ("torch DataLoader, same decode, same workers", dl_rate, dl_start, dl_steady),
    ]
    if baseline:
        old = {k: med(x[k] for x in runs["baseline"]) for k in ("rate", "steady", "startup")}
        rows.append((f"Ray Data at {args.baseline} (before)", old["rate"], old["startup"], old["steady"]))
    for name, rate, start, steady in rows:
        print(f"{name:<48}{rate:>10.1f}{rate / ceiling:>11.2f}{start:>11.1f}{steady:>10.1f}")
    print(f"{'single-process decode x ' + str(args.workers) + ' (ceiling)':<48}{ceiling:>10.1f}{1.0:>11.2f}")
    print(f"ratios: Ray Data / DataLoader = {ray['rate'] / dl_rate:.2f}, Ray Data / ceiling = "
          f"{ray['rate'] / ceiling:.2f} (end to end, start-up included); samples: ray {n}, dataloader "
          f"{runs['dataloader'][0][2]}; steady = after the first batch (prefetch makes it overstate)")  # fmt: skip
    print(f"paired ratios (each repeat's passes against each other, then the median; range in brackets): "
          f"Ray Data / DataLoader = {med(paired['dataloader']):.2f} [{min(paired['dataloader']):.2f}-"
          f"{max(paired['dataloader']):.2f}], Ray Data / ceiling = {med(paired['ceiling']):.2f} "
          f"[{min(paired['ceiling']):.2f}-{max(paired['ceiling']):.2f}]")  # fmt: skip
    if baseline:
        print(f"before/after: Ray Data now / at {args.baseline} = {ray['rate'] / old['rate']:.2f} end to end, "
              f"{ray['steady'] / old['steady']:.2f} steady")  # fmt: skip
    mem1, mem_big = runs["ray"][0]["mem1"], runs["ray"][0]["mem"]
    print(f"peak memory (PSS of the measuring process tree, Ray workers and object store included; {args.workers} "
          f"read+decode tasks at most in both runs; passes of their own, untimed): 1x ({runs['ray'][0]['n1']} "
          f"samples) {mem1 / 2**20:.0f} MiB, {args.scale}x ({n} samples) {mem_big / 2**20:.0f} MiB, "
          f"ratio {mem_big / mem1:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
