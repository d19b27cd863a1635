"""Write a deterministic synthetic GAIR dataset (12-band GeoTIFF tiles, JPEG street views).

Example:
    python jobs/make_synthetic.py --out s3://bucket/synthetic --tiles 1000 --obs-per-tile 8 --seed 0
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gair.data import synthetic  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--out", required=True, help="output directory (local path or s3://...); manifest goes to OUT/manifest"
    )
    p.add_argument("--tiles", type=int, required=True, help="number of RS tiles")
    p.add_argument("--obs-per-tile", type=int, default=4, help="street-view observations per tile")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    p.add_argument("--tile-size", type=int, default=128, help="RS tile width in pixels")
    p.add_argument("--sv-size", type=int, default=96, help="street-view size in pixels")
    p.add_argument("--by-reference", action="store_true", help="write image files and reference them by URI")
    p.add_argument("--rows-per-shard", type=int, default=256, help="tiles per Parquet shard")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.tiles < 1 or args.obs_per_tile < 0:
        print("error: --tiles must be >= 1 and --obs-per-tile >= 0", file=sys.stderr)
        return 2
    start = time.monotonic()
    uri = synthetic.write_synthetic(
        args.out, tiles=args.tiles, obs_per_tile=args.obs_per_tile, seed=args.seed, inline=not args.by_reference,
        tile_size=args.tile_size, sv_size=args.sv_size, rows_per_shard=args.rows_per_shard, log=sys.stderr,
    )  # fmt: skip
    print(f"wrote {args.tiles} tiles x {args.obs_per_tile} observations to {uri} in {time.monotonic() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
