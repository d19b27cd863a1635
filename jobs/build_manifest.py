"""Build a GAIR manifest from the reference folder layout or from a CSV/Parquet table.

Examples:
    python jobs/build_manifest.py --folders /data/gair_root --out s3://bucket/manifests/train
    python jobs/build_manifest.py --table pairs.csv --out /data/manifest --by-reference

Exit codes: 0 built (rejected observations are listed with --rejects), 2 unusable input.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gair.data import manifest, schema  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--folders", help="root with images/<group>/<uuid>.jpg, rs_data/<group>/*.tif, image_meta_data/<uuid>.json"
    )
    src.add_argument("--table", help="CSV or Parquet with columns sv, lon, lat, rs (paths or URIs)")
    p.add_argument("--out", required=True, help="output manifest directory (local path or s3://...)")
    p.add_argument("--by-reference", action="store_true", help="store image URIs instead of inline bytes")
    p.add_argument("--workers", type=int, default=8, help="parallel tile readers (threads)")
    p.add_argument("--rows-per-shard", type=int, default=1024, help="tiles per Parquet shard")
    p.add_argument("--row-group-mib", type=int, default=32, help="row group size cap in MiB (streaming unit)")
    p.add_argument("--rejects", help="write rejected observations/tiles as CSV (id, reason, detail)")
    p.add_argument("--overwrite", action="store_true", help="replace existing shards under --out")
    return p.parse_args(argv)


def write_rejects(path: str, rejected: list[tuple[str, str, str]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "reason", "detail"])
        w.writerows(rejected)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    writer_kwargs = {
        "rows_per_shard": args.rows_per_shard, "row_group_bytes": args.row_group_mib << 20, "overwrite": args.overwrite,
    }  # fmt: skip
    common = {"inline": not args.by_reference, "workers": args.workers, "writer_kwargs": writer_kwargs}
    try:
        if args.folders:
            result = manifest.build_from_folders(args.folders, args.out, **common)
        else:
            result = manifest.build_from_table(args.table, args.out, **common)
    except (FileNotFoundError, FileExistsError, schema.SchemaError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.rejects:
        write_rejects(args.rejects, result.rejected)
    print(f"manifest {result.manifest_uri}: {result.tiles} tiles, {result.observations} observations, "
          f"{len(result.rejected)} rejected")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
