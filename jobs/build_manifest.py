"""Build a GAIR manifest from the reference folder layout or from a CSV/Parquet table.

Runs as a Ray Data job by default: the input is listed on the driver, tiles are read,
checked and written as Parquet shards by tasks across the cluster (RAY_ADDRESS when set,
else a local Ray), with Ray Data's progress bar. `--engine threads` runs the threaded
builder in this process instead. Both give the same manifest content and rejects.

Examples:
    python jobs/build_manifest.py --folders /data/gair_root --out s3://bucket/manifests/train --rejects rejects.csv
    python jobs/build_manifest.py --table pairs.csv --out /data/manifest --by-reference
    RAY_ADDRESS=head:6379 python jobs/build_manifest.py --table s3://bucket/pairs.parquet --out s3://bucket/m

Prints the tile, observation and reject counts, and the rejects by reason.
Exit codes: 0 built (rejected observations are listed with --rejects), 2 unusable input.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gair.data import manifest, schema, storage  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--folders", help="root with images/<group>/<uuid>.jpg, rs_data/<group>/*.tif, image_meta_data/<uuid>.json"
    )
    src.add_argument("--table", help="CSV or Parquet with columns sv, lon, lat, rs (paths or URIs)")
    p.add_argument("--out", required=True, help="output manifest directory (local path or s3://...)")
    p.add_argument("--by-reference", action="store_true", help="store image URIs instead of inline bytes")
    p.add_argument(
        "--engine", choices=("ray", "threads"), default="ray",
        help="ray: Ray Data tasks across the cluster (default); threads: one process, --workers threads",
    )  # fmt: skip
    p.add_argument("--workers", type=int, default=8, help="threads engine: parallel tile readers (threads)")
    p.add_argument(
        "--tiles-per-task", type=int, default=None,
        help="ray engine: tiles per task, so per shard at most (default: --rows-per-shard, less on a small input "
        "so that every CPU gets work)",
    )  # fmt: skip
    p.add_argument("--task-threads", type=int, default=4, help="ray engine: reader threads inside each task (I/O)")
    p.add_argument("--no-progress", action="store_true", help="ray engine: no progress bar")
    p.add_argument("--rows-per-shard", type=int, default=1024, help="tiles per Parquet shard (at most)")
    p.add_argument("--row-group-mib", type=int, default=32, help="row group size cap in MiB (streaming unit)")
    p.add_argument("--rejects", help="write rejected observations/tiles as CSV (id, reason, detail; path or s3://)")
    p.add_argument("--overwrite", action="store_true", help="replace existing shards under --out")
    return p.parse_args(argv)


def write_rejects(path: str, rejected: list[tuple[str, str, str]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "reason", "detail"])
    w.writerows(rejected)
    storage.write_bytes(path, buf.getvalue().encode())


def build(args: argparse.Namespace) -> manifest.BuildResult:
    writer_kwargs = {
        "rows_per_shard": args.rows_per_shard, "row_group_bytes": args.row_group_mib << 20, "overwrite": args.overwrite,
    }  # fmt: skip
    if args.engine == "threads":
        common = {"inline": not args.by_reference, "workers": args.workers, "writer_kwargs": writer_kwargs}
        if args.folders:
            return manifest.build_from_folders(args.folders, args.out, **common)
        return manifest.build_from_table(args.table, args.out, **common)
    from gair.data import manifest_ray

    common = {
        "inline": not args.by_reference, "writer_kwargs": writer_kwargs, "tiles_per_task": args.tiles_per_task,
        "task_threads": args.task_threads, "progress": not args.no_progress, "connect": manifest_ray.connect_ray,
    }  # fmt: skip
    try:
        if args.folders:
            return manifest_ray.build_from_folders(args.folders, args.out, **common)
        return manifest_ray.build_from_table(args.table, args.out, **common)
    finally:
        manifest_ray.disconnect_ray()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = build(args)
    except (FileNotFoundError, FileExistsError, schema.SchemaError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.rejects:
        write_rejects(args.rejects, result.rejected)
    print(f"manifest {result.manifest_uri}: {result.tiles} tiles, {result.observations} observations, "
          f"{len(result.rejected)} rejected")  # fmt: skip
    for reason, n in result.reasons().items():
        print(f"  {reason}: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
