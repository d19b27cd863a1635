"""Tile-preparation benchmark: tiles/s and bytes read from object storage per tile.

Starts a local S3-compatible server (moto, loopback) unless --endpoint is given, writes
--scenes synthetic Sentinel-2 scenes (one COG per band: 10, 20 and 60 m grids, 256 px
internal tiles, overviews; two UTM zones) and street views in --cells cells, then:

- runs the job's own driver (``gair.prepare.driver.run``) on a private local Ray with
  --cpus CPUs and prints tiles/s;
- prints, per tile, the bytes fetched from object storage against the bytes of the scene's
  files (all its band COGs), and their ratio. Bytes are counted by the job's range reader
  (``gair.prepare.rangeio``): the sum of the lengths of the ranged GET responses that
  rasterio's reads turned into, header reads included;
- cuts --baseline-tiles tiles the naive way (download every band file whole, cut in
  memory) and prints its tiles/s and bytes per tile beside the windowed path.

    python bench/prepare_tiles.py --scenes 2 --scene-px 1024 --cells 32
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from gair.configs import load_config  # noqa: E402
from gair.configs.prepare import PrepareConfig  # noqa: E402
from gair.data import storage  # noqa: E402
from gair.prepare import driver, synthetic  # noqa: E402
from gair.prepare.cut import CutOptions, read_window  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenes", type=int, default=2, help="synthetic scenes (alternating UTM zones 32N and 33N)")
    p.add_argument("--scene-px", type=int, default=1024, help="scene side in 10 m pixels (a multiple of 6)")
    p.add_argument("--cells", type=int, default=32, help="cells (tiles) with street views, spread over the scenes")
    p.add_argument("--tile-m", type=float, default=2000.0, help="tile_size_m")
    p.add_argument("--sv-per-cell", type=int, default=3, help="street views per cell, at random points inside it")
    p.add_argument("--noise", type=int, default=1000, help="uniform noise added to the bands (realistic compression)")
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    p.add_argument(
        "--cells-per-shard",
        type=int,
        default=4,
        help="cells_per_shard: cells per shard (one Parquet file of the manifest)",
    )
    p.add_argument("--baseline-tiles", type=int, default=4, help="tiles cut by whole-file download (baseline)")
    p.add_argument("--endpoint", default="", help="S3 endpoint to use instead of starting moto")
    p.add_argument("--no-ray", action="store_true", help="cut the shards in this process, one after another")
    return p.parse_args()


def write_inputs(root: str, args: argparse.Namespace) -> tuple[str, str, list[synthetic.SceneSpec]]:
    from rasterio.warp import transform as warp_transform

    size_m = args.scene_px * 10 - (args.scene_px * 10) % 60
    specs = [
        synthetic.SceneSpec(f"S2_bench_{k}", 32632 + k % 2, 300000.0 + 60000.0 * (k // 2), 5000400.0, float(size_m),
                            "2024-06-01T10:30:00+00:00", 1.0, noise=args.noise)
        for k in range(args.scenes)
    ]  # fmt: skip
    items = [synthetic.write_scene(s, storage.join(root, "scenes"), blocksize=256) for s in specs]
    stac = synthetic.write_item_collection(items, storage.join(root, "scenes", "items.json"))
    rng = np.random.default_rng(0)
    records = []
    per_side = int(size_m // args.tile_m) - 1  # whole cells inside a scene
    slots = [(k, i, j) for k in range(args.scenes) for i in range(per_side) for j in range(per_side)]
    for c, idx in enumerate(rng.choice(len(slots), size=min(args.cells, len(slots)), replace=False)):
        k, i, j = slots[idx]
        s = specs[k]
        x0 = (np.ceil(s.left / args.tile_m) + i) * args.tile_m
        y0 = (np.ceil((s.top - s.size_m) / args.tile_m) + j) * args.tile_m
        xs = x0 + rng.uniform(0.05, 0.95, args.sv_per_cell) * args.tile_m
        ys = y0 + rng.uniform(0.05, 0.95, args.sv_per_cell) * args.tile_m
        lons, lats = warp_transform(s.crs, "EPSG:4326", xs.tolist(), ys.tolist())
        records += [{"id": f"c{c}-{n}", "lon": lo, "lat": la} for n, (lo, la) in enumerate(zip(lons, lats))]
    table = synthetic.write_street_views(records, storage.join(root, "sv", "sv.csv"), size=16)
    return stac, table, specs


def scene_bytes(root: str, scene_id: str) -> int:
    import pyarrow.fs as pafs

    fs, path = storage.resolve(storage.join(root, "scenes", scene_id))
    return sum(i.size for i in fs.get_file_info(pafs.FileSelector(path)) if i.type == pafs.FileType.File)


def baseline(cfg: PrepareConfig, n: int) -> tuple[float, float]:
    """(tiles/s, bytes per tile) of cutting by downloading every band file whole."""
    from rasterio.io import MemoryFile

    plan = driver.build_plan(cfg)
    opts = CutOptions.from_config(cfg)
    cells = [c for shard in plan.shards for c in shard][:n]
    start, fetched = time.perf_counter(), 0
    for cell in cells:
        scene = plan.scenes[cell["scene_ids"][0]]
        for band in (*opts.bands, "SCL"):
            data = storage.read_bytes(scene.bands[band].uri)
            fetched += len(data)
            with MemoryFile(data) as mem, mem.open() as src:
                read_window(src, [1], cell["bounds"], opts.tile_pixels, opts.resampling)
    return len(cells) / (time.perf_counter() - start), fetched / max(1, len(cells))


def run_in_process(cfg: PrepareConfig) -> dict:
    """The job's plan and shard function without Ray: one process, shards one after another."""
    start = time.perf_counter()
    plan = driver.build_plan(cfg)
    driver.prepare_output(cfg, plan.fingerprint)
    opts = CutOptions.from_config(cfg)
    for item in driver.shard_items(plan, range(len(plan.shards))):
        driver.process_shard(item, opts, cfg.out)
    records = driver.read_shard_records(cfg, len(plan.shards))
    return driver.summarize(plan, records, 0, time.perf_counter() - start)[0]


def main() -> int:
    args = parse_args()
    proc = None
    if not args.endpoint:
        from ingest import start_moto

        proc, args.endpoint = start_moto()
    import os

    os.environ.update(AWS_ENDPOINT_URL=args.endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1")  # fmt: skip
    try:
        return bench(args)
    finally:
        if proc is not None:
            proc.terminate()


def bench(args: argparse.Namespace) -> int:
    import boto3
    import ray

    bucket = f"bench-prepare-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=args.endpoint).create_bucket(Bucket=bucket)
    root = f"s3://{bucket}"
    t0 = time.perf_counter()
    stac, table, specs = write_inputs(root, args)
    print(f"inputs: {args.scenes} scenes of {args.scene_px} px (10 m) x 13 band COGs, {args.cells} cells x "
          f"{args.sv_per_cell} street views, written in {time.perf_counter() - t0:.1f} s")  # fmt: skip
    cfg = load_config(PrepareConfig, None, [
        f"street_views={table}", f"stac={stac}", f"out={root}/out", f"tile_size_m={args.tile_m}",
        f"cells_per_shard={args.cells_per_shard}", "overwrite=true",
    ])  # fmt: skip
    start = time.perf_counter()
    if args.no_ray:
        s = run_in_process(cfg)
    else:
        ray.init(num_cpus=args.cpus, include_dashboard=False, _temp_dir=tempfile.mkdtemp(prefix="gbp-", dir="/tmp"))
        try:
            s = driver.run(cfg, log=None).summary
        finally:
            ray.shutdown()
    seconds = time.perf_counter() - start
    tiles = max(1, s["tiles"])
    per_scene = float(np.mean([scene_bytes(root, sp.scene_id) for sp in specs]))
    read_per_tile = s["bytes_read"] / tiles
    base_rate, base_bytes = baseline(cfg, args.baseline_tiles)
    print(json.dumps({k: s[k] for k in ("cells", "tiles", "observations_kept", "rejected", "bytes_read")}))
    print(f"tile: {cfg.tile_pixels} x {cfg.tile_pixels} px x {len(cfg.bands)} bands; scene files: "
          f"{per_scene / 2**20:.2f} MiB per scene (13 COGs)")  # fmt: skip
    print(f"{'path':<34}{'tiles/s':>10}{'MiB read/tile':>15}{'of scene files':>16}")
    label = "windowed reads (job, 1 process)" if args.no_ray else f"windowed reads (job, Ray, {args.cpus} CPUs)"
    print(f"{label:<34}{s['tiles'] / seconds:>10.2f}{read_per_tile / 2**20:>15.3f}"
          f"{read_per_tile / per_scene:>16.3f}")  # fmt: skip
    print(f"{'whole-file download (1 process)':<34}{base_rate:>10.2f}{base_bytes / 2**20:>15.3f}"
          f"{base_bytes / per_scene:>16.3f}")  # fmt: skip
    print(f"windowed / whole-file: bytes per tile {read_per_tile / base_bytes:.3f}x; job wall time {seconds:.1f} s "
          "(includes planning)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
