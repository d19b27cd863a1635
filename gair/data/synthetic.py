"""A deterministic synthetic GAIR dataset with a planted, learnable RS -> SV relation.

The world has ``N_CLASSES`` land-cover classes. Each RS tile is a smooth class map
rendered with a per-class 12-band Sentinel-2-like spectral signature (plus noise); each
street view is rendered from the class *at its location*: a class colour scheme and a
class stripe texture (orientation, frequency), with random brightness, phase and noise.
So a street view can only be matched to the right spot of the right tile by looking at
the RS content there: localized RS -> SV retrieval is learnable, and the class is stored
in each observation's ``meta_json`` (``{"class": c}``) for evaluation.

Class definitions are fixed (independent of ``seed``) so that train and validation sets
made with different seeds share the relation. Tiles alternate between a UTM zone and
EPSG:4326 (non-square), like the real data this stands in for.
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any, TextIO

import numpy as np
import torch
import torch.nn.functional as F

from gair import geo
from gair.data import decode, manifest, storage
from gair.sensors import S2_BANDS_12

N_CLASSES = 6
_WORLD = np.random.default_rng(20250316)  # fixed: class definitions do not depend on the seed
# (classes, 12 bands) reflectance x 10000: vegetation-, water-, soil-, urban-like mixtures.
SIGNATURES = np.clip(_WORLD.uniform(300, 4500, size=(N_CLASSES, len(S2_BANDS_12))), 100, 6000).astype(np.float32)
SV_COLOURS = _WORLD.integers(30, 226, size=(N_CLASSES, 2, 3)).astype(np.float32)  # top and bottom colour
SV_STRIPES = np.stack(
    [np.linspace(0, math.pi, N_CLASSES, endpoint=False), _WORLD.uniform(2.0, 9.0, N_CLASSES)], axis=1
)  # (angle, cycles per image)
PIXEL_M = 10.0  # metres per pixel, as Sentinel-2


def class_map(rng: np.random.Generator, height: int, width: int, *, grid: int = 5) -> np.ndarray:
    """A smooth (H, W) int map of classes: argmax of upsampled low-resolution noise fields."""
    noise = torch.from_numpy(rng.standard_normal((1, N_CLASSES, grid, grid)).astype(np.float32))
    fields = F.interpolate(noise, size=(height, width), mode="bicubic", align_corners=False)
    return fields[0].argmax(0).numpy().astype(np.int64)


def render_rs(rng: np.random.Generator, classes_HW: np.ndarray) -> np.ndarray:
    """(12, H, W) uint16 tile: class signatures, a tile-wide gain and 4% pixel noise."""
    image = SIGNATURES[classes_HW].transpose(2, 0, 1)  # (12, H, W)
    gain = rng.uniform(0.9, 1.1)
    noise = rng.standard_normal(image.shape, dtype=np.float32) * 0.04
    return np.clip(image * gain * (1.0 + noise), 0, 65535).astype(np.uint16)


def render_sv(rng: np.random.Generator, cls: int, size: int) -> np.ndarray:
    """(size, size, 3) uint8 street view of class ``cls``: colour gradient + oriented stripes."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
    top, bottom = SV_COLOURS[cls]
    base = top[None, None] * (1 - ys[..., None]) + bottom[None, None] * ys[..., None]
    angle, cycles = SV_STRIPES[cls]
    phase = rng.uniform(0, 2 * math.pi)
    stripes = np.sin(2 * math.pi * cycles * (xs * math.cos(angle) + ys * math.sin(angle)) + phase)
    image = base * rng.uniform(0.8, 1.2) + 35.0 * stripes[..., None] + rng.normal(0, 8, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def tile_georeference(rng: np.random.Generator, index: int, tile_size: int) -> decode.GeoInfo:
    """Even tiles in their UTM zone (square), odd tiles in EPSG:4326 (non-square, like the reference)."""
    lon, lat = rng.uniform(-170, 170), rng.uniform(-60, 60)
    if index % 2 == 0:
        zone = int((lon + 180) // 6) + 1
        crs = f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"
        from rasterio.warp import transform as warp

        (cx,), (cy,) = warp("EPSG:4326", crs, [lon], [lat])
        w = h = tile_size
        return decode.GeoInfo(crs, (PIXEL_M, 0.0, cx - w / 2 * PIXEL_M, 0.0, -PIXEL_M, cy + h / 2 * PIXEL_M), w, h)
    w, h = tile_size, max(8, int(round(tile_size * 0.78)))
    dy = PIXEL_M / 111_320.0
    dx = dy / math.cos(math.radians(lat))
    return decode.GeoInfo("EPSG:4326", (dx, 0.0, lon - w / 2 * dx, 0.0, -dy, lat + h / 2 * dy), w, h)


def make_tile(seed: int, index: int, *, obs_per_tile: int, tile_size: int, sv_size: int) -> dict[str, Any]:
    """One synthetic tile: georeference, RS image, and observations as (class, lonlat, image)."""
    rng = np.random.default_rng([seed, index])
    info = tile_georeference(rng, index, tile_size)
    classes = class_map(rng, info.height, info.width)
    rs = render_rs(rng, classes)
    # Observations at random sub-pixel positions, away from the outermost pixel.
    cols = rng.uniform(1, info.width - 1, obs_per_tile)
    rows = rng.uniform(1, info.height - 1, obs_per_tile)
    xy = np.stack([2 * cols / info.width - 1, 2 * rows / info.height - 1], axis=1)
    lonlat = geo.xy_to_lonlat(xy, info.crs, info.transform, info.width, info.height)
    obs = []
    for j in range(obs_per_tile):
        cls = int(classes[int(rows[j]), int(cols[j])])
        obs.append(
            {
                "obs_id": f"s{seed}-t{index:07d}-o{j:03d}",
                "lonlat": (float(lonlat[j, 0]), float(lonlat[j, 1])),
                "class": cls,
                "image": render_sv(rng, cls, sv_size),
                "heading": float(rng.uniform(0, 360)),
                "capture_time": f"2020-{1 + j % 12:02d}-{1 + index % 28:02d}T12:00:00Z",
            }
        )
    return {"tile_id": f"s{seed}-t{index:07d}", "info": info, "rs": rs, "obs": obs}


def write_synthetic(
    out_uri: str,
    *,
    tiles: int,
    obs_per_tile: int,
    seed: int,
    inline: bool = True,
    tile_size: int = 128,
    sv_size: int = 96,
    rows_per_shard: int = 256,
    row_group_rows: int = 64,
    overwrite: bool = True,
    s3: storage.S3Options | None = None,
    log: TextIO | None = None,
) -> str:
    """Write a synthetic dataset under ``out_uri``; returns the manifest URI (``<out_uri>/manifest``).

    ``inline=False`` writes the images as files (``rs/<tile>.tif``, ``sv/<obs>.jpg``) next
    to the manifest and references them by URI. The same arguments give the same bytes.
    """
    manifest_uri = storage.join(out_uri, "manifest")
    writer = manifest.ManifestWriter(
        manifest_uri, rows_per_shard=rows_per_shard, row_group_rows=row_group_rows, overwrite=overwrite, s3=s3
    )
    progress = manifest.Progress("synthetic", tiles, log)
    with writer:
        for index in range(tiles):
            tile = make_tile(seed, index, obs_per_tile=obs_per_tile, tile_size=tile_size, sv_size=sv_size)
            writer.write(tile_to_row(tile, out_uri, inline=inline, s3=s3))
            progress.step()
    progress.done(f"{tiles} tiles -> {manifest_uri}")
    return manifest_uri


def tile_to_row(
    tile: dict[str, Any], out_uri: str = "", *, inline: bool = True, s3: storage.S3Options | None = None
) -> dict[str, Any]:
    """A manifest row for a :func:`make_tile` result (images written under ``out_uri`` unless inline)."""
    info = tile["info"]
    tif = decode.encode_geotiff(tile["rs"], info.crs, info.transform)
    observations = []
    for o in tile["obs"]:
        jpg = decode.encode_jpeg(o["image"])
        sv_uri = None
        if not inline:
            sv_uri = storage.join(out_uri, "sv", o["obs_id"] + ".jpg")
            storage.write_bytes(sv_uri, jpg, s3)
        observations.append(
            manifest.observation(
                o["obs_id"],
                o["lonlat"],
                sv_bytes=jpg if inline else None,
                sv_uri=sv_uri,
                capture_time=o["capture_time"],
                heading=o["heading"],
                meta={"class": o["class"]},
            )  # fmt: skip
        )
    rs_uri = None
    if not inline:
        rs_uri = storage.join(out_uri, "rs", tile["tile_id"] + ".tif")
        storage.write_bytes(rs_uri, tif, s3)
    return manifest.tile_row(
        tile["tile_id"], info, S2_BANDS_12, observations, rs_bytes=tif if inline else None, rs_uri=rs_uri
    )


def write_reference_layout(
    root: str,
    *,
    groups: int,
    tiles_per_group: int = 1,
    obs_per_tile: int = 4,
    seed: int = 0,
    tile_size: int = 32,
    sv_size: int = 32,
    bad: bool = False,
    s3: storage.S3Options | None = None,
) -> dict[str, Any]:
    """Input for the manifest builders: the reference folder layout and a table of the same pairs.

    ``images/<group>/<obs>.jpg``, ``rs_data/<group>/<tile>.tif``, ``image_meta_data/<obs>.json``
    (lon, lat, heading, capture_time, class) and ``pairs.csv`` (sv, lon, lat, rs, heading,
    capture_time; paths relative to ``root``). A group's tiles lie apart, so each street view
    is inside one tile of its group. ``bad`` adds what the builders reject or let through:
    coordinates missing (``lonlat_nan``), out of range, outside the tiles; an image without
    metadata, a group without a tile, an unreadable RS tile, an unreadable (garbage) street
    view (kept: the builders do not decode street views; the validator flags it) and, in the
    table only, a missing SV file and a missing RS file. Returns the counts and paths.
    """
    rows: list[list[Any]] = []
    n_sv = n_tiles = 0

    def put(rel: str, data: bytes) -> None:
        storage.write_bytes(storage.join(root, rel), data, s3)

    def add_sv(group: str, obs_id: str, jpg: bytes, lon: Any, lat: Any, rs_rel: str, extra: dict, *, meta=True):
        nonlocal n_sv
        put(f"images/{group}/{obs_id}.jpg", jpg)
        n_sv += 1
        if meta:
            put(f"image_meta_data/{obs_id}.json", json.dumps({"lon": lon, "lat": lat, **extra}).encode())
        rows.append([f"images/{group}/{obs_id}.jpg", lon, lat, rs_rel, extra.get("heading"), extra.get("capture_time")])

    first_tile = None
    for g in range(groups):
        group = f"g{g:05d}"
        for t in range(tiles_per_group):
            tile = make_tile(
                seed, g * tiles_per_group + t, obs_per_tile=obs_per_tile, tile_size=tile_size, sv_size=sv_size
            )
            info = tile["info"]
            rs_rel = f"rs_data/{group}/{tile['tile_id']}.tif"
            put(rs_rel, decode.encode_geotiff(tile["rs"], info.crs, info.transform))
            n_tiles += 1
            first_tile = first_tile or (group, rs_rel, tile)
            for o in tile["obs"]:
                extra = {"heading": o["heading"], "capture_time": o["capture_time"], "class": o["class"]}
                add_sv(group, o["obs_id"], decode.encode_jpeg(o["image"]), *o["lonlat"], rs_rel, extra)
    table_only: list[list[Any]] = []
    if bad and first_tile is not None:
        group, rs_rel, tile = first_tile
        jpg = decode.encode_jpeg(tile["obs"][0]["image"])
        lon, lat = tile["obs"][0]["lonlat"]
        add_sv(group, "bad-lonlat-nan", jpg, None, lat, rs_rel, {})
        add_sv(group, "bad-lat-95", jpg, lon, 95.0, rs_rel, {})
        add_sv(group, "bad-outside", jpg, lon + (-20.0 if lon > 0 else 20.0), lat, rs_rel, {})
        add_sv(group, "bad-garbage-jpeg", b"\xff\xd8\xff\xe0" + b"\x00" * 50, lon, lat, rs_rel, {})
        add_sv(group, "bad-no-metadata", jpg, lon, lat, rs_rel, {}, meta=False)
        rows.pop()  # the table has no metadata files: that row would be a good one
        add_sv("gbad-no-tile", "bad-group-without-tile", jpg, lon, lat, "rs_data/gbad-no-tile/none.tif", {})
        rows.pop()
        put("rs_data/gbad-garbage/garbage.tif", b"II*\x00" + b"\x07" * 200)
        n_tiles += 1
        add_sv("gbad-garbage", "bad-on-garbage-tile", jpg, lon, lat, "rs_data/gbad-garbage/garbage.tif", {})
        table_only = [
            ["images/missing/bad-missing-sv.jpg", lon, lat, rs_rel, None, None],
            ["images/x/bad-on-missing-tile.jpg", lon, lat, "rs_data/missing/none.tif", None, None],
        ]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["sv", "lon", "lat", "rs", "heading", "capture_time"])
    w.writerows([["" if v is None else v for v in r] for r in rows + table_only])
    table = storage.join(root, "pairs.csv")
    storage.write_bytes(table, buf.getvalue().encode(), s3)
    return {"root": root, "table": table, "street_views": n_sv, "tiles": n_tiles, "table_rows": len(rows + table_only)}
