"""Manifest-building benchmark: the Ray Data builder vs the threaded builder on the same input.

Generates a reference folder layout and the table of the same pairs in a temp dir
(``synthetic.write_reference_layout``: --groups groups of --tiles-per-group tiles with
--obs-per-tile street views each, 12-band uint16 GeoTIFFs of --tile-size px, JPEGs of
--sv-size px), then builds an inline manifest from each --sources input with the threaded
builder (``manifest.build_from_*``, --workers threads, what ``--engine threads`` runs)
and with the Ray Data builder (``manifest_ray.build_from_*`` on a private local Ray of
--cpus CPUs, what the job runs by default), and prints rows/s of each (a row is a street
view of the input: an image of the layout, a line of the table), tiles/s and their ratio.
Ray's start-up is timed apart; a build of one task per group warms every worker up first;
the builds alternate, --repeats times each, and the median time is reported.
Both builds must give the same manifest content (checked).

    python bench/build_manifest.py --groups 1000 --obs-per-tile 4 --cpus 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray  # noqa: E402
from _common import start_local_ray  # noqa: E402

from gair.data import manifest, manifest_ray, synthetic  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--groups", type=int, default=1000, help="groups (folders) of the input")
    p.add_argument(
        "--tiles-per-group",
        type=int,
        default=1,
        help="RS tiles per group (folder), each with --obs-per-tile street views",
    )
    p.add_argument("--obs-per-tile", type=int, default=4, help="street views per tile")
    p.add_argument("--tile-size", type=int, default=64, help="RS tile side in pixels (12 bands, uint16)")
    p.add_argument("--sv-size", type=int, default=64, help="street view side in pixels (JPEG)")
    p.add_argument("--sources", default="folders,table", help="inputs to build from: folders, table or both")
    p.add_argument("--workers", type=int, default=8, help="threads of the threaded builder (the job's default)")
    p.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the local Ray")
    p.add_argument("--task-threads", type=int, default=4, help="reader threads in each Ray task (the job's default)")
    p.add_argument(
        "--rows-per-shard", type=int, default=1024, help="tiles (manifest rows) per Parquet shard of the output"
    )
    p.add_argument("--repeats", type=int, default=3, help="timed builds of each kind (median reported)")
    p.add_argument("--dir", default=None, help="work directory (default: a new temp dir, removed at the end)")
    return p.parse_args()


def timed(fn, *args, **kwargs) -> tuple[manifest.BuildResult, float]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def content(uri: str) -> list[tuple]:
    """Tiles and their observations, order-free (what the tests compare, cheaper: ids and sizes)."""
    out = []
    for rows in manifest.iter_manifest_rows(uri):
        for r in rows:
            obs = sorted((o["obs_id"], len(o["sv_bytes"] or b""), o["lon"], o["lat"]) for o in r["observations"])
            out.append((r["tile_id"], len(r["rs_bytes"] or b""), tuple(obs)))
    return sorted(out)


def main() -> int:
    args = parse_args()
    work = args.dir or tempfile.mkdtemp(prefix="gair-bench-manifest-")
    try:
        return bench(args, work)
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


def bench(args: argparse.Namespace, work: str) -> int:
    t = time.perf_counter()
    info = synthetic.write_reference_layout(
        os.path.join(work, "in"), groups=args.groups, tiles_per_group=args.tiles_per_group,
        obs_per_tile=args.obs_per_tile, tile_size=args.tile_size, sv_size=args.sv_size, seed=0,
    )  # fmt: skip
    size = sum(f.stat().st_size for f in Path(info["root"]).rglob("*") if f.is_file())
    print(f"input: {info['street_views']} street views, {info['tiles']} tiles ({args.tile_size}px x 12 bands), "
          f"{size / 2**20:.1f} MiB on local disk, written in {time.perf_counter() - t:.1f}s", flush=True)  # fmt: skip
    warm = synthetic.write_reference_layout(os.path.join(work, "warm"), groups=4 * args.cpus, seed=1)

    t = time.perf_counter()
    start_local_ray(args.cpus, 0, verbose=False)
    ray_start = time.perf_counter() - t
    writer_kwargs = {"rows_per_shard": args.rows_per_shard}
    # Warm-up: a task per group starts every worker process and its imports (torch, rasterio: seconds each).
    manifest_ray.build_from_folders(warm["root"], os.path.join(work, "warm-out"), tiles_per_task=1, progress=False)

    lines = []
    for source in [s for s in args.sources.split(",") if s]:
        src = info["root"] if source == "folders" else info["table"]
        threaded = manifest.build_from_folders if source == "folders" else manifest.build_from_table
        on_ray = manifest_ray.build_from_folders if source == "folders" else manifest_ray.build_from_table
        rows = info["street_views"] if source == "folders" else info["table_rows"]
        times_a, times_b = [], []
        for _ in range(args.repeats):  # alternating, so that both see the same machine
            a, t = timed(threaded, src, os.path.join(work, f"threads-{source}"), workers=args.workers,
                         writer_kwargs={**writer_kwargs, "overwrite": True}, log=None)  # fmt: skip
            times_a.append(t)
            b, t = timed(on_ray, src, os.path.join(work, f"ray-{source}"), task_threads=args.task_threads,
                         writer_kwargs={**writer_kwargs, "overwrite": True}, progress=False)  # fmt: skip
            times_b.append(t)
        ta, tb = statistics.median(times_a), statistics.median(times_b)
        same = content(a.manifest_uri) == content(b.manifest_uri) and sorted(a.rejected) == sorted(b.rejected)
        if not same:
            raise SystemExit(f"{source}: the two builders disagree ({a.tiles}/{b.tiles} tiles)")
        lines.append((source, rows, a, ta, b, tb, (min(times_a), max(times_a)), (min(times_b), max(times_b))))

    print(f"\nmanifest build, inline, {args.cpus} CPUs (nproc {os.cpu_count()}); threaded: {args.workers} threads in one "
          f"process; Ray Data: local Ray of {args.cpus} CPUs, {args.task_threads} reader threads per task "
          f"(Ray start-up {ray_start:.1f}s, not counted)")  # fmt: skip
    print(f"{'input':<9}{'builder':<10}{'rows':>6}{'tiles':>6}{'shards':>7}{'seconds':>9}{'min-max':>13}"
          f"{'rows/s':>8}{'tiles/s':>8}")  # fmt: skip
    for source, rows, a, ta, b, tb, spread_a, spread_b in lines:
        for name, r, t, (lo, hi) in (("threads", a, ta, spread_a), ("ray data", b, tb, spread_b)):
            print(f"{source:<9}{name:<10}{rows:>6}{r.tiles:>6}{len(r.shards):>7}{t:>9.2f}{f'{lo:.2f}-{hi:.2f}':>13}"
                  f"{rows / t:>8.1f}{r.tiles / t:>8.1f}")  # fmt: skip
    for source, _, _, ta, _, tb, *_ in lines:
        print(f"{source}: Ray Data / threads rows/s = {ta / tb:.2f} (same manifest content and rejects: yes)")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
