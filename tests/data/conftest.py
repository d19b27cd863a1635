"""Fixtures of the data-plane tests: small synthetic manifests, tiny configs, a bad-input corpus."""

from __future__ import annotations

import copy
import functools
import hashlib
import io
import re
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gair.configs.data import DataConfig
from gair.configs.model import ModelConfig
from gair.data import decode, manifest, synthetic
from gair.data.decode import Reason

TINY_BANDS = ("B2", "B3", "B4", "B8A", "B11")


def tiny_model_cfg() -> ModelConfig:
    return ModelConfig(size="tiny", rs_image_size=32, sv_image_size=32, sv_patch_size=16, rs_bands=TINY_BANDS)


def tiny_data_cfg(**overrides: Any) -> DataConfig:
    base = dict(
        batch_size=4, obs_per_tile=3, extra_points=5, num_decode_workers=1, decode_batch_size=4,
        shuffle_buffer=8, max_bad_fraction=0.0, min_rows_before_bad_check=10_000, prefetch_batches=1,
    )  # fmt: skip
    base.update(overrides)
    cfg = DataConfig(**base)
    cfg.validate()
    return cfg


@pytest.fixture
def model_cfg() -> ModelConfig:
    return tiny_model_cfg()


def good_row(index: int = 0, seed: int = 7, obs: int = 3, tile_size: int = 48) -> dict[str, Any]:
    """A valid inline manifest row from the synthetic generator."""
    tile = synthetic.make_tile(seed, index, obs_per_tile=obs, tile_size=tile_size, sv_size=40)
    return synthetic.tile_to_row(tile, inline=True)


def _garbage_tiff() -> bytes:
    return b"II*\x00" + b"\x07" * 200


def _mutate_obs(key: str, value: Any) -> Callable[[dict], None]:
    def f(row: dict) -> None:
        row["observations"][1][key] = value

    return f


def _set(key: str, value: Any) -> Callable[[dict], None]:
    def f(row: dict) -> None:
        row[key] = value

    return f


def _truncate_rs(row: dict) -> None:
    row["rs_bytes"] = row["rs_bytes"][: len(row["rs_bytes"]) // 3]


def _drop_rs(row: dict) -> None:
    row["rs_bytes"] = None
    row["rs_uri"] = None


def _drop_sv(row: dict) -> None:
    row["observations"][0]["sv_bytes"] = None
    row["observations"][0]["sv_uri"] = None


def _rename_band(row: dict) -> None:
    row["band_names"] = [("X8A" if b == "B8A" else b) for b in row["band_names"]]


def _outside(row: dict) -> None:
    # A valid coordinate about 1 degree away from the tile.
    o = row["observations"][2]
    o["lon"] = o["lon"] + 1.0 if o["lon"] < 179 else o["lon"] - 1.0


def _png_header_garbage() -> bytes:
    buf = io.BytesIO(b"\xff\xd8\xff\xe0" + b"\x00" * 50)
    return buf.getvalue()


@functools.cache
def _corpus_dir() -> Path:
    """Files some corpus rows point at (an empty file, a directory), made once per test session."""
    d = Path(tempfile.mkdtemp(prefix="gair-bad-corpus-"))
    (d / "empty.tif").write_bytes(b"")
    (d / "empty.jpg").write_bytes(b"")
    (d / "a-directory.tif").mkdir()
    (d / "a-directory.jpg").mkdir()
    return d


def _rs_uri(name: str) -> Callable[[dict], None]:
    def f(row: dict) -> None:
        _drop_rs(row)
        row["rs_uri"] = name if "://" in name else str(_corpus_dir() / name)

    return f


def _sv_uri(name: str) -> Callable[[dict], None]:
    def f(row: dict) -> None:
        row["observations"][1].update(sv_bytes=None, sv_uri=str(_corpus_dir() / name))

    return f


def _rs_with_nodata(fraction: float, value: float | None, dtype: str) -> Callable[[dict], None]:
    """Re-encode the tile as ``dtype`` with the top ``fraction`` of its rows set to ``value``
    (NaN / Inf, or a declared GeoTIFF nodata value)."""

    def f(row: dict) -> None:
        image, info = decode.decode_geotiff(row["rs_bytes"])
        image = image.astype(dtype)
        fill = np.nan if value is None else value
        image[:, : int(round(image.shape[1] * fraction))] = fill
        row["rs_bytes"] = _encode_with_nodata(image, info.crs, info.transform, None if value is None else value)

    return f


def _encode_with_nodata(image: np.ndarray, crs: str, transform: Any, nodata: float | None) -> bytes:
    from affine import Affine
    from rasterio.io import MemoryFile

    c, h, w = image.shape
    profile = {"driver": "GTiff", "width": w, "height": h, "count": c, "dtype": image.dtype.name, "crs": crs,
               "transform": Affine(*transform[:6]), "nodata": nodata}  # fmt: skip
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(image)
        return mem.read()


def _jpeg_claiming_size(width: int, height: int) -> bytes:
    """A small JPEG whose header claims ``width x height`` (a decompression bomb's shape)."""
    data = bytearray(decode.encode_jpeg(np.zeros((8, 8, 3), np.uint8)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _truncated_sv(row: dict) -> None:
    sv = row["observations"][1]["sv_bytes"]
    row["observations"][1]["sv_bytes"] = sv[: len(sv) // 2]


# (kind, mutation, expected reason). Every kind is a different way a real row goes bad.
BAD_ROW_CORPUS: list[tuple[str, Callable[[dict], None], str]] = [
    ("rs_garbage_bytes", _set("rs_bytes", _garbage_tiff()), Reason.RS_UNDECODABLE),
    ("rs_truncated", _truncate_rs, Reason.RS_UNDECODABLE),
    ("rs_missing_file", lambda r: (_drop_rs(r), r.update(rs_uri="/nonexistent/gair/tile.tif")), Reason.RS_MISSING_FILE),
    ("rs_no_image", _drop_rs, Reason.NO_RS_IMAGE),
    ("rs_band_count", lambda r: r.update(band_names=[*r["band_names"], "B13"]), Reason.RS_BAND_COUNT),
    ("rs_missing_band", _rename_band, Reason.RS_MISSING_BAND),
    ("rs_size_mismatch", _set("width", 999), Reason.RS_SIZE_MISMATCH),
    ("bad_crs", _set("crs", "EPSG:999999"), Reason.BAD_CRS),
    ("bad_transform", _set("transform", [0.0] * 6), Reason.BAD_TRANSFORM),
    ("sv_garbage", _mutate_obs("sv_bytes", _png_header_garbage()), Reason.SV_UNDECODABLE),
    ("sv_missing_file", lambda r: r["observations"][1].update(sv_bytes=None, sv_uri="/nonexistent/sv.jpg"), Reason.SV_MISSING_FILE),
    ("sv_no_image", _drop_sv, Reason.NO_SV_IMAGE),
    ("lonlat_nan", _mutate_obs("lat", float("nan")), Reason.LONLAT_NAN),
    ("lonlat_null", _mutate_obs("lon", None), Reason.LONLAT_NAN),
    ("lonlat_out_of_range", _mutate_obs("lat", 95.0), Reason.LONLAT_OUT_OF_RANGE),
    ("obs_outside_tile", _outside, Reason.OBS_OUTSIDE_TILE),
    ("lonlat_inf", _mutate_obs("lon", float("inf")), Reason.LONLAT_NAN),
    ("rs_uri_directory", _rs_uri("a-directory.tif"), Reason.RS_UNREADABLE),
    ("rs_uri_unknown_scheme", _rs_uri("nosuchscheme://bucket/tile.tif"), Reason.RS_UNREADABLE),
    ("rs_empty_file", _rs_uri("empty.tif"), Reason.RS_UNDECODABLE),
    ("rs_mostly_nan", _rs_with_nodata(0.75, None, "float32"), Reason.RS_NODATA),
    ("rs_mostly_inf", _rs_with_nodata(0.75, np.inf, "float32"), Reason.RS_NODATA),
    ("rs_mostly_nodata_value", _rs_with_nodata(0.75, 0, "uint16"), Reason.RS_NODATA),
    ("crs_empty", _set("crs", ""), Reason.BAD_CRS),
    ("transform_null_entry", _set("transform", [10.0, 0.0, None, 0.0, -10.0, 0.0]), Reason.BAD_TRANSFORM),
    ("sv_uri_directory", _sv_uri("a-directory.jpg"), Reason.SV_UNREADABLE),
    ("sv_empty_file", _sv_uri("empty.jpg"), Reason.SV_UNDECODABLE),
    ("sv_truncated", _truncated_sv, Reason.SV_UNDECODABLE),
    ("sv_decompression_bomb", _mutate_obs("sv_bytes", _jpeg_claiming_size(60000, 60000)), Reason.SV_UNDECODABLE),
]  # fmt: skip


def bad_row(kind: str, index: int = 100) -> dict[str, Any]:
    mutate = {k: m for k, m, _ in BAD_ROW_CORPUS}[kind]
    row = copy.deepcopy(good_row(index))
    row["tile_id"] = f"bad-{kind}"
    for j, o in enumerate(row["observations"]):
        o["obs_id"] = f"bad-{kind}-o{j}"
    mutate(row)
    return row


def write_rows(uri: str, rows: list[dict[str, Any]], **kwargs: Any) -> str:
    with manifest.ManifestWriter(uri, overwrite=True, **kwargs) as w:
        w.write_many(rows)
    return uri


@pytest.fixture(scope="session")
def synthetic_manifest(tmp_path_factory: pytest.TempPathFactory) -> str:
    """16 synthetic tiles x 4 observations, inline, in 4 shards (local)."""
    out = tmp_path_factory.mktemp("synthetic")
    return synthetic.write_synthetic(
        str(out), tiles=16, obs_per_tile=4, seed=3, tile_size=48, sv_size=40, rows_per_shard=4, row_group_rows=2
    )


@pytest.fixture(scope="session")
def real_tiles(shared_data: Path) -> list[Path]:
    tiles = sorted((shared_data / "satclip-s2" / "images").glob("*.tif"))
    assert len(tiles) >= 20
    return tiles


def tile_centre_lonlat(path: Path) -> np.ndarray:
    import rasterio

    from gair import geo

    with rasterio.open(path) as src:
        return geo.xy_to_lonlat(np.zeros((1, 2)), src.crs.to_string(), tuple(src.transform)[:6], src.width, src.height)[
            0
        ]


def _digest(b: bytes | None) -> str | None:
    return None if b is None else hashlib.sha256(b).hexdigest()[:16]


def manifest_content(uri: str) -> list[tuple]:
    """Every tile of a manifest with its observations, order-free (image bytes as digests)."""
    tiles = []
    for rows in manifest.iter_manifest_rows(uri):
        for r in rows:
            obs = sorted(
                (o["obs_id"], _digest(o["sv_bytes"]), o["sv_uri"], o["lon"], o["lat"], o["capture_time"],
                 o["heading"], o["meta_json"])
                for o in r["observations"]
            )  # fmt: skip
            tiles.append((r["tile_id"], r["crs"], tuple(r["transform"]), r["width"], r["height"],
                          tuple(r["band_names"]), _digest(r["rs_bytes"]), r["rs_uri"], tuple(obs)))  # fmt: skip
    return sorted(tiles)


def normalized_rejects(rejected: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """Rejections without what differs from run to run (GDAL's in-memory file names, object addresses)."""
    scrub = [(re.compile(r"[0-9a-f]{8}-[0-9a-f-]{27}\.tif"), "<mem>.tif"), (re.compile(r"0x[0-9a-f]+"), "0x")]
    out = []
    for i, r, d in rejected:
        for pattern, repl in scrub:
            d = pattern.sub(repl, d)
        out.append((i, r, d))
    return sorted(out)
