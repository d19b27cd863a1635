"""Manifest row -> fixed-shape numpy arrays: the one decode path of every loader.

The Ray Data pipeline (``gair.data.pipeline``) and the torch DataLoader baseline of
``bench/ingest.py`` both call :func:`decode_row`; the validator reuses its checks. No Ray
here: this module is plain Python, numpy, rasterio, PIL and torch.

A row that cannot become a training sample raises :class:`BadRowError` with one of the
:class:`Reason` codes, so the caller can count it, report it and move on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from gair import geo
from gair.data import storage, transforms

Image.MAX_IMAGE_PIXELS = 50_000_000  # a street view larger than this is an error, not a decompression bomb


class Reason:
    """Why a row is bad. Stable strings: tests, reports and dashboards match on them."""

    NO_RS_IMAGE = "no_rs_image"  # neither rs_bytes nor rs_uri
    RS_MISSING_FILE = "rs_missing_file"  # rs_uri points at nothing
    RS_UNDECODABLE = "rs_undecodable"  # not a readable GeoTIFF
    RS_BAND_COUNT = "rs_band_count"  # band count differs from band_names
    RS_MISSING_BAND = "rs_missing_band"  # a band the model needs is not in the tile
    RS_SIZE_MISMATCH = "rs_size_mismatch"  # decoded size differs from width/height
    BAD_CRS = "bad_crs"  # CRS not understood
    BAD_TRANSFORM = "bad_transform"  # not 6 finite numbers, or singular
    NO_SV_IMAGE = "no_sv_image"  # neither sv_bytes nor sv_uri
    SV_MISSING_FILE = "sv_missing_file"
    SV_UNDECODABLE = "sv_undecodable"  # not a readable JPEG/PNG
    LONLAT_NAN = "lonlat_nan"  # lon or lat missing, NaN or infinite
    LONLAT_OUT_OF_RANGE = "lonlat_out_of_range"  # |lon| > 180 or |lat| > 90
    OBS_OUTSIDE_TILE = "obs_outside_tile"  # a valid coordinate that is not inside the tile
    DUPLICATE_TILE_ID = "duplicate_tile_id"  # found by the validator (needs the whole manifest)
    DUPLICATE_OBS_ID = "duplicate_obs_id"
    NO_OBSERVATIONS = "no_observations"  # used by builders; the pipeline accepts RS-only tiles


class BadRowError(ValueError):
    """A row that cannot be used; ``reason`` is a :class:`Reason` code, ``item_id`` the tile or observation."""

    def __init__(self, reason: str, item_id: str, detail: str) -> None:
        super().__init__(f"{item_id}: {reason}: {detail}")
        self.reason = reason
        self.item_id = item_id
        self.detail = detail


@dataclass(frozen=True)
class DecodeSpec:
    """Everything :func:`decode_row` needs, picklable (no configs, no secrets)."""

    bands: tuple[str, ...]
    rs_size: int
    sv_size: int
    obs_per_tile: int  # K
    extra_points: int  # M
    augment: bool = False
    crop_min_scale: float = 0.7
    sv_flip: bool = True
    rs_flip: bool = True
    rs_jitter_p: float = 0.0  # colour jitter (drawn last from the row generator, so earlier draws do not move)
    rs_jitter: tuple[float, float] = (0.2, 0.2)
    rs_jitter_bands: tuple[str, ...] = ("B3", "B4", "B5")
    sv_jitter_p: float = 0.0
    sv_jitter: tuple[float, float, float, float] = (0.1, 0.1, 0.1, 0.1)
    seed: int = 0
    epoch: int = 0
    s3: storage.S3Options = field(default_factory=storage.S3Options)


@dataclass(frozen=True)
class GeoInfo:
    crs: str
    transform: tuple[float, ...]
    width: int
    height: int


# ---------------------------------------------------------------------------- images


def decode_geotiff(data: bytes) -> tuple[np.ndarray, GeoInfo]:
    """GeoTIFF bytes -> ((C, H, W) array in its stored dtype, embedded georeference)."""
    from rasterio.io import MemoryFile  # rasterio import is slow; keep module import cheap

    with MemoryFile(data) as mem, mem.open() as src:
        image = src.read()
        crs = src.crs.to_string() if src.crs else ""
        info = GeoInfo(crs, tuple(src.transform)[:6], src.width, src.height)
    return image, info


def encode_geotiff(image_CHW: np.ndarray, crs: str, transform: Sequence[float], *, compress: str = "deflate") -> bytes:
    """(C, H, W) array -> GeoTIFF bytes (used by builders and the synthetic generator)."""
    from affine import Affine
    from rasterio.io import MemoryFile

    c, h, w = image_CHW.shape
    profile = {
        "driver": "GTiff", "width": w, "height": h, "count": c, "dtype": image_CHW.dtype.name,
        "crs": crs, "transform": Affine(*transform[:6]), "compress": compress,
    }  # fmt: skip
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(image_CHW)
        return mem.read()


def decode_jpeg(data: bytes) -> np.ndarray:
    """JPEG (or any PIL-readable) bytes -> (H, W, 3) uint8 RGB."""
    with Image.open(io.BytesIO(data)) as img:
        img.draft("RGB", (512, 512))  # let libjpeg decode at a reduced scale when the image is large
        return np.asarray(img.convert("RGB"))


def encode_jpeg(image_HWC: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image_HWC).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def load_image_bytes(
    inline: bytes | None, uri: str | None, *, kind: str, item_id: str, s3: storage.S3Options | None = None
) -> bytes:
    """The image bytes of an RS (``kind="rs"``) or SV (``"sv"``) image, inline or behind a URI."""
    if inline:
        return inline
    if not uri:
        raise BadRowError(Reason.NO_RS_IMAGE if kind == "rs" else Reason.NO_SV_IMAGE, item_id, "no bytes and no uri")
    try:
        return storage.read_bytes(uri, s3)
    except (FileNotFoundError, IsADirectoryError) as exc:
        reason = Reason.RS_MISSING_FILE if kind == "rs" else Reason.SV_MISSING_FILE
        raise BadRowError(reason, item_id, f"{uri} not found") from exc


# ---------------------------------------------------------------------- row checks


def check_georeference(row: Mapping[str, Any]) -> GeoInfo:
    """The row's georeference, or BadRowError(BAD_CRS / BAD_TRANSFORM)."""
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    tile_id = str(row.get("tile_id"))
    try:
        CRS.from_user_input(row["crs"])
    except (CRSError, TypeError, ValueError) as exc:
        raise BadRowError(Reason.BAD_CRS, tile_id, f"crs {row.get('crs')!r}: {exc}") from exc
    t = row.get("transform")
    values = [float(v) for v in t] if t is not None and all(v is not None for v in t) else []
    if (
        len(values) != 6
        or not all(math.isfinite(v) for v in values)
        or abs(values[0] * values[4] - values[1] * values[3]) == 0
    ):
        raise BadRowError(
            Reason.BAD_TRANSFORM, tile_id, f"transform {t!r} is not 6 finite numbers of an invertible affine"
        )
    width, height = int(row.get("width") or 0), int(row.get("height") or 0)
    if width <= 0 or height <= 0:
        raise BadRowError(Reason.RS_SIZE_MISMATCH, tile_id, f"width x height {width} x {height} must be positive")
    return GeoInfo(str(row["crs"]), tuple(values), width, height)


def observation_xy(observations: Sequence[Mapping[str, Any]], geo_info: GeoInfo) -> tuple[np.ndarray, np.ndarray]:
    """(lonlat (N, 2), xy (N, 2)) of all observations, or BadRowError naming the first bad one."""
    lonlat = np.array([[_num(o.get("lon")), _num(o.get("lat"))] for o in observations], dtype=np.float64).reshape(-1, 2)
    finite = np.isfinite(lonlat).all(axis=1)
    if not finite.all():
        o = observations[int(np.flatnonzero(~finite)[0])]
        raise BadRowError(Reason.LONLAT_NAN, str(o.get("obs_id")), f"lon, lat = {o.get('lon')}, {o.get('lat')}")
    in_range = (np.abs(lonlat[:, 0]) <= 180) & (np.abs(lonlat[:, 1]) <= 90)
    if not in_range.all():
        o = observations[int(np.flatnonzero(~in_range)[0])]
        raise BadRowError(
            Reason.LONLAT_OUT_OF_RANGE, str(o.get("obs_id")), f"lon, lat = {o.get('lon')}, {o.get('lat')}"
        )
    if len(lonlat) == 0:
        return lonlat, lonlat.copy()
    xy = geo.lonlat_to_xy(lonlat, geo_info.crs, geo_info.transform, geo_info.width, geo_info.height)
    ok = geo.inside(xy)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        o = observations[i]
        raise BadRowError(
            Reason.OBS_OUTSIDE_TILE,
            str(o.get("obs_id")),
            f"lon, lat = {o.get('lon')}, {o.get('lat')} maps to xy {xy[i].round(3).tolist()}",
        )
    return lonlat, xy


def decode_rs(row: Mapping[str, Any], geo_info: GeoInfo, s3: storage.S3Options | None = None) -> np.ndarray:
    """The row's RS image (C, H, W) checked against its band names and size."""
    tile_id = str(row.get("tile_id"))
    data = load_image_bytes(row.get("rs_bytes"), row.get("rs_uri"), kind="rs", item_id=tile_id, s3=s3)
    try:
        image, embedded = decode_geotiff(data)
    except Exception as exc:  # noqa: BLE001 - rasterio raises many types for garbage input
        raise BadRowError(
            Reason.RS_UNDECODABLE, tile_id, f"not a readable GeoTIFF ({type(exc).__name__}: {exc})"
        ) from exc
    band_names = list(row.get("band_names") or [])
    if image.shape[0] != len(band_names):
        raise BadRowError(
            Reason.RS_BAND_COUNT, tile_id, f"image has {image.shape[0]} bands, band_names lists {len(band_names)}"
        )
    if (embedded.width, embedded.height) != (geo_info.width, geo_info.height):
        raise BadRowError(
            Reason.RS_SIZE_MISMATCH,
            tile_id,
            f"image is {embedded.width}x{embedded.height}, manifest says {geo_info.width}x{geo_info.height}",
        )
    return image


def decode_sv(obs: Mapping[str, Any], s3: storage.S3Options | None = None) -> np.ndarray:
    """An observation's street view as (H, W, 3) uint8."""
    obs_id = str(obs.get("obs_id"))
    data = load_image_bytes(obs.get("sv_bytes"), obs.get("sv_uri"), kind="sv", item_id=obs_id, s3=s3)
    try:
        return decode_jpeg(data)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise BadRowError(Reason.SV_UNDECODABLE, obs_id, f"not a readable image ({type(exc).__name__}: {exc})") from exc


# ------------------------------------------------------------------------- sample


def row_rng(seed: int, epoch: int, tile_id: str) -> np.random.Generator:
    """A generator that depends only on (seed, epoch, tile id): the same draws on any worker, in any order."""
    digest = hashlib.blake2b(tile_id.encode(), digest_size=8).digest()
    return np.random.default_rng([seed, epoch, int.from_bytes(digest, "little")])


def decode_row(row: Mapping[str, Any], spec: DecodeSpec) -> dict[str, np.ndarray]:
    """One manifest row -> one training sample of fixed shapes (K observations, M extra points).

    Returns ``rs`` (C, S, S) float32 in [0, 1]; ``sv`` (K, V, V, 3) uint8 (normalized
    later, on the consumer, to keep the object store 4x smaller); ``sv_mask`` (K,) bool;
    ``lonlat``, ``xy`` (K, 2) float32; ``xy_extra``, ``lonlat_extra`` (M, 2) float32.
    Raises :class:`BadRowError` if any part of the row is unusable.
    """
    tile_id = str(row.get("tile_id"))
    rng = row_rng(spec.seed, spec.epoch, tile_id)
    geo_info = check_georeference(row)
    observations = list(row.get("observations") or [])
    lonlat_all, xy_all = observation_xy(observations, geo_info)

    chosen = _choose_observations(len(observations), spec.obs_per_tile, rng if spec.augment else None)
    image = decode_rs(row, geo_info, spec.s3)
    try:
        image = transforms.select_bands(image, list(row["band_names"]), spec.bands)
    except KeyError as exc:
        raise BadRowError(Reason.RS_MISSING_BAND, tile_id, str(exc)) from exc

    if spec.augment:
        aug = transforms.sample_geometry_aug(
            rng, geo_info.width, geo_info.height, min_scale=spec.crop_min_scale, keep_xy=xy_all[chosen]
        )
        if not spec.rs_flip:
            aug = dataclasses.replace(aug, flip_x=False, flip_y=False)
    else:
        aug = transforms.GeometryAug(geo_info.width, geo_info.height)
    rs = transforms.resize_chw(transforms.normalize_s2(aug.apply(image), spec.bands), spec.rs_size)

    k = spec.obs_per_tile
    sv = np.zeros((k, spec.sv_size, spec.sv_size, 3), np.uint8)
    mask = np.zeros(k, bool)
    lonlat = np.zeros((k, 2), np.float32)
    xy = np.zeros((k, 2), np.float32)
    for slot, i in enumerate(chosen):
        img = transforms.resize_sv(decode_sv(observations[i], spec.s3), spec.sv_size)
        if spec.augment and spec.sv_flip and rng.random() < 0.5:
            img = img[:, ::-1]
        sv[slot], mask[slot], lonlat[slot] = img, True, lonlat_all[i]
    if len(chosen):
        xy[: len(chosen)] = aug.forward(xy_all[chosen])

    xy_extra, lonlat_extra = _extra_points(rng, spec.extra_points, aug, geo_info)
    if spec.augment:
        rs, sv = _color_jitter(rs, sv, mask, rng, spec)
    return {
        "rs": rs, "sv": sv, "sv_mask": mask, "lonlat": lonlat, "xy": xy,
        "xy_extra": xy_extra, "lonlat_extra": lonlat_extra,
    }  # fmt: skip


def _color_jitter(
    rs: np.ndarray, sv: np.ndarray, mask: np.ndarray, rng: np.random.Generator, spec: DecodeSpec
) -> tuple[np.ndarray, np.ndarray]:
    """The reference's colour jitter of the RS tile (three bands) and of each street view."""
    if spec.rs_jitter_p > 0:
        index = [spec.bands.index(b) for b in spec.rs_jitter_bands]  # checked by PretrainConfig.validate
        b, c = spec.rs_jitter
        rs = transforms.color_jitter_bands(rs, rng, index, brightness=b, contrast=c, p=spec.rs_jitter_p)
    if spec.sv_jitter_p > 0:
        for slot in np.flatnonzero(mask):
            sv[slot] = transforms.color_jitter_sv(sv[slot], rng, spec.sv_jitter, p=spec.sv_jitter_p)
    return rs, sv


def _choose_observations(n: int, k: int, rng: np.random.Generator | None) -> np.ndarray:
    """Indices of up to ``k`` of ``n`` observations: random when training, the first ones otherwise."""
    if n <= k:
        return np.arange(n)
    if rng is None:
        return np.arange(k)
    return np.sort(rng.choice(n, size=k, replace=False))


def _extra_points(
    rng: np.random.Generator, m: int, aug: transforms.GeometryAug, geo_info: GeoInfo
) -> tuple[np.ndarray, np.ndarray]:
    """``m`` uniform points inside the augmented tile, and their (lon, lat)."""
    if m == 0:
        return np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32)
    xy = rng.uniform(-1.0, 1.0, size=(m, 2))
    lonlat = geo.xy_to_lonlat(aug.inverse(xy), geo_info.crs, geo_info.transform, geo_info.width, geo_info.height)
    return xy.astype(np.float32), lonlat.astype(np.float32)


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)


def empty_sample(spec: DecodeSpec) -> dict[str, np.ndarray]:
    """A zero sample of the right shapes (stands in for a bad row inside a batch)."""
    c, s, v, k, m = len(spec.bands), spec.rs_size, spec.sv_size, spec.obs_per_tile, spec.extra_points
    return {
        "rs": np.zeros((c, s, s), np.float32), "sv": np.zeros((k, v, v, 3), np.uint8),
        "sv_mask": np.zeros(k, bool), "lonlat": np.zeros((k, 2), np.float32), "xy": np.zeros((k, 2), np.float32),
        "xy_extra": np.zeros((m, 2), np.float32), "lonlat_extra": np.zeros((m, 2), np.float32),
    }  # fmt: skip


def decode_rows(
    rows: Sequence[Mapping[str, Any]], spec: DecodeSpec, on_bad: Callable[[BadRowError], None] | None = None
) -> dict[str, np.ndarray]:
    """Decode many rows into stacked arrays plus ``ok`` (bool), ``tile_id`` and ``bad_reason`` columns.

    Bad rows become zero samples with ``ok=False`` and ``bad_reason = "<reason>: <id>: <detail>"``.
    """
    samples, ok, reasons = [], [], []
    for row in rows:
        try:
            samples.append(decode_row(row, spec))
            ok.append(True)
            reasons.append("")
        except BadRowError as exc:
            if on_bad is not None:
                on_bad(exc)
            samples.append(empty_sample(spec))
            ok.append(False)
            reasons.append(f"{exc.reason}: {exc.item_id}: {exc.detail}")
    template = empty_sample(spec)
    out = {key: np.stack([s[key] for s in samples]) if samples else template[key][None][:0] for key in template}
    out["ok"] = np.array(ok, dtype=bool)
    out["tile_id"] = np.array([str(r.get("tile_id")) for r in rows], dtype=object)
    out["bad_reason"] = np.array(reasons, dtype=object)
    return out
