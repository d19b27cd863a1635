"""Cut Sentinel-2 tiles around street views and write a GAIR training manifest, on Ray Data.

Street views (a CSV, Parquet or GeoParquet table of id, lon, lat, image path or URI and
optional capture time and heading) are grouped into square cells of `tile_size_m` on the
UTM grid of the scenes; each cell becomes one tile cut from the scene with the least cloud
in the cell (then the nearest in time) with windowed reads of its COGs. Scenes come from a
STAC ItemCollection (`stac`) or a list of COGs (`cogs`). Outputs under `out`: manifest/,
rejects.csv, summary.json (and tiles/ when inline=false).

Examples:
    python jobs/prepare_tiles.py --set street_views=s3://bucket/sv.parquet \\
        --set stac=s3://bucket/s2-items.json --set out=s3://bucket/prepared
    python jobs/prepare_tiles.py --config my_region.yaml --set max_cloud_fraction=0.05
    RAY_AUTH_MODE=token ray job submit --working-dir . -- python jobs/prepare_tiles.py --config my_region.yaml
    python jobs/pretrain.py --config configs/pretrain_gpu.yaml --set data.train_manifest=s3://bucket/prepared/manifest

Rerunning the same command resumes: shards already complete are skipped.
Exit codes: 0 done (rejections are in rejects.csv), 2 bad config or unusable input.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gair.cli import config_parser, connect_ray  # noqa: E402
from gair.configs import ConfigError, load_config  # noqa: E402
from gair.configs.prepare import PrepareConfig  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    args = config_parser(__doc__, PrepareConfig, "prepare.yaml").parse_args(argv)
    try:
        cfg = load_config(PrepareConfig, args.config, args.set)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    from gair.prepare import driver

    try:
        result = driver.run(cfg, connect=connect_ray)
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.summary, indent=2))
    print(f"manifest {result.manifest_uri}: {result.summary['tiles']} tiles, "
          f"{result.summary['observations_kept']} observations")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
