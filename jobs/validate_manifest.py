"""Validate a GAIR manifest: schema, georeference, decodability, coordinates, duplicate ids.

Runs as a Ray Data job by default: row groups are checked by tasks across the cluster
(RAY_ADDRESS when set, else a local Ray), with Ray Data's progress bar; the input is
listed and its first shard's schema checked before Ray starts. `--engine threads` checks
in this process instead. Prints the counts and the problems by reason.

Exit codes: 0 valid; 1 some rows are bad (listed as id, reason, detail in --report);
2 the input is unusable (missing, not Parquet, not a manifest of a known version).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gair.data import manifest  # noqa: E402
from gair.sensors import S2_BANDS_10  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("uri", help="manifest directory or Parquet file (local path or s3://...)")
    p.add_argument("--report", help="write the per-row report here (CSV: id, reason, detail)")
    p.add_argument("--no-decode", action="store_true", help="skip decoding images (schema and coordinates only)")
    p.add_argument(
        "--bands", default=",".join(S2_BANDS_10), help="comma-separated bands every tile must have (model.rs_bands)"
    )
    p.add_argument(
        "--engine", choices=("ray", "threads"), default="ray",
        help="ray: Ray Data tasks across the cluster (default); threads: one process, --workers threads",
    )  # fmt: skip
    p.add_argument("--workers", type=int, default=4, help="threads engine: parallel row checkers (threads)")
    p.add_argument("--task-threads", type=int, default=4, help="ray engine: row checker threads inside each task")
    p.add_argument("--no-progress", action="store_true", help="ray engine: no progress bar")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bands = [b for b in args.bands.split(",") if b]
    if args.engine == "threads":
        report = manifest.validate_manifest(
            args.uri, decode_images=not args.no_decode, required_bands=bands, workers=args.workers, log=sys.stderr
        )
    else:
        from gair.data import manifest_ray

        try:
            report = manifest_ray.validate_manifest(
                args.uri, decode_images=not args.no_decode, required_bands=bands, task_threads=args.task_threads,
                progress=not args.no_progress, connect=manifest_ray.connect_ray,
            )  # fmt: skip
        finally:
            manifest_ray.disconnect_ray()
    if args.report:
        report.write_report(args.report)
    if report.fatal:
        print(f"unusable input: {report.fatal}", file=sys.stderr)
    else:
        print(f"{args.uri}: {report.tiles} tiles, {report.observations} observations, {len(report.bad)} problems")
        for reason, n in sorted(report.reasons().items()):
            print(f"  {reason}: {n}")
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
