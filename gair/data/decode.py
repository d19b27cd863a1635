"""Manifest row -> fixed-shape numpy arrays: the one decode path of every loader.

The Ray Data pipeline (``gair.data.pipeline``) and the torch DataLoader baseline of
``bench/ingest.py`` both call :func:`decode_row`; the validator reuses its checks. No Ray
here: this module is plain Python, numpy, rasterio, PIL and torch.

A row that cannot become a training sample raises :class:`BadRowError` with one of the
:class:`Reason` codes, so the caller can count it, report it and move on. A bad
*observation* (an unreadable street view, a bad coordinate) does not cost its tile: the
observation is skipped, reported to the caller, and the tile keeps its good ones.

RS pixels that are NaN, infinite or the GeoTIFF's nodata value are filled with 0 (what
the reference's ``nan_to_num`` gives, and Sentinel-2 L2A's own nodata value); a tile
with more than ``DecodeSpec.max_nodata_fraction`` such pixels is skipped
(``rs_nodata``). No sample that leaves :func:`decode_rows` holds a NaN or Inf.

Epochs: with ``DecodeSpec.visit_all`` a tile of N observations becomes ceil(N / K)
samples ("visits") per epoch; the visits take disjoint sets of observations from a
permutation drawn from (seed, epoch, tile), so an epoch presents every observation once.
Each visit draws its own crop, flips and extra points from (seed, epoch, tile, visit).
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
    RS_UNREADABLE = "rs_unreadable"  # rs_uri is a directory, unreadable, or of an unknown scheme
    RS_NODATA = "rs_nodata"  # more than max_nodata_fraction of the pixels are nodata, NaN or Inf
    RS_UNDECODABLE = "rs_undecodable"  # not a readable GeoTIFF
    RS_BAND_COUNT = "rs_band_count"  # band count differs from band_names
    RS_MISSING_BAND = "rs_missing_band"  # a band the model needs is not in the tile
    RS_SIZE_MISMATCH = "rs_size_mismatch"  # decoded size differs from width/height
    BAD_CRS = "bad_crs"  # CRS not understood
    BAD_TRANSFORM = "bad_transform"  # not 6 finite numbers, or singular
    NO_SV_IMAGE = "no_sv_image"  # neither sv_bytes nor sv_uri
    SV_MISSING_FILE = "sv_missing_file"
    SV_UNREADABLE = "sv_unreadable"  # sv_uri is a directory, unreadable, or of an unknown scheme
    SV_UNDECODABLE = "sv_undecodable"  # not a readable JPEG/PNG
    LONLAT_NAN = "lonlat_nan"  # lon or lat missing, NaN or infinite
    LONLAT_OUT_OF_RANGE = "lonlat_out_of_range"  # |lon| > 180 or |lat| > 90
    OBS_OUTSIDE_TILE = "obs_outside_tile"  # a valid coordinate that is not inside the tile
    DUPLICATE_TILE_ID = "duplicate_tile_id"  # found by the validator (needs the whole manifest)
    DUPLICATE_OBS_ID = "duplicate_obs_id"
    NO_OBSERVATIONS = "no_observations"  # used by builders; the pipeline accepts RS-only tiles
    NON_FINITE = "non_finite"  # a decoded sample holds NaN or Inf (a guard: decode fills them first)
    DECODE_ERROR = "decode_error"  # any other exception while decoding a row (never crashes the task)


#: Reasons that concern one observation: the observation is skipped, its tile kept.
OBSERVATION_REASONS = frozenset(
    {
        Reason.NO_SV_IMAGE,
        Reason.SV_MISSING_FILE,
        Reason.SV_UNREADABLE,
        Reason.SV_UNDECODABLE,
        Reason.LONLAT_NAN,
        Reason.LONLAT_OUT_OF_RANGE,
        Reason.OBS_OUTSIDE_TILE,
    }
)


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
    max_nodata_fraction: float = 0.5  # skip a tile with more nodata/NaN/Inf pixels than this
    visit_all: bool = False  # ceil(N / K) visits per tile with disjoint observations (training epochs)
    copy: int = 0  # which copy of a tile drawn more than once in an epoch (data.train_manifests): its own draws
    s3: storage.S3Options = field(default_factory=storage.S3Options)


@dataclass(frozen=True)
class GeoInfo:
    crs: str
    transform: tuple[float, ...]
    width: int
    height: int
    nodata: tuple[float | None, ...] = ()  # per band, from the GeoTIFF (empty: unknown)


# ---------------------------------------------------------------------------- images


def gdal_env() -> Any:
    """A GDAL environment for reading and writing bytes in memory: with a session that holds no
    credentials. ``rasterio.Env()`` (and each open outside an Env) builds a boto3 session when
    AWS credentials are in the environment, ~20 ms each; GDAL here never touches the network."""
    import rasterio  # rasterio import is slow; keep module import cheap
    from rasterio.session import DummySession

    return rasterio.Env(session=DummySession())


def decode_geotiff(data: bytes) -> tuple[np.ndarray, GeoInfo]:
    """GeoTIFF bytes -> ((C, H, W) array in its stored dtype, embedded georeference)."""
    from rasterio.io import MemoryFile

    with gdal_env(), MemoryFile(data) as mem, mem.open() as src:
        image = src.read()
        crs = src.crs.to_string() if src.crs else ""
        info = GeoInfo(crs, tuple(src.transform)[:6], src.width, src.height, tuple(src.nodatavals))
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
    with gdal_env(), MemoryFile() as mem:
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
    except FileNotFoundError as exc:
        reason = Reason.RS_MISSING_FILE if kind == "rs" else Reason.SV_MISSING_FILE
        raise BadRowError(reason, item_id, f"{uri} not found") from exc
    except storage.StorageUnavailableError:
        raise  # the endpoint, not the row: fail the task (see decode_rows)
    except (OSError, ValueError, TypeError) as exc:  # a directory, no permission, an unknown scheme, I/O
        reason = Reason.RS_UNREADABLE if kind == "rs" else Reason.SV_UNREADABLE
        raise BadRowError(reason, item_id, f"{uri} is not a readable file ({type(exc).__name__}: {exc})") from exc


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


def read_rs(
    row: Mapping[str, Any], geo_info: GeoInfo, s3: storage.S3Options | None = None
) -> tuple[np.ndarray, GeoInfo]:
    """The row's RS image (C, H, W) in its stored dtype, checked against its band names and size, and
    the georeference embedded in the file (``nodata`` per band)."""
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
    return image, embedded


def decode_rs(row: Mapping[str, Any], geo_info: GeoInfo, s3: storage.S3Options | None = None) -> np.ndarray:
    """The row's RS image (C, H, W) checked against its band names and size (raw: nodata not filled)."""
    return read_rs(row, geo_info, s3)[0]


def nodata_mask(image_CHW: np.ndarray, nodata: Sequence[float | None]) -> np.ndarray:
    """(C, H, W) bool: values that are NaN, infinite, or their band's nodata value."""
    bad = np.zeros(image_CHW.shape, bool)
    if image_CHW.dtype.kind in "fc":
        bad |= ~np.isfinite(image_CHW)
    for c, value in enumerate(nodata[: image_CHW.shape[0]]):
        if value is not None and np.isfinite(value):
            bad[c] |= image_CHW[c] == value
    return bad


def fill_nodata(image_CHW: np.ndarray, nodata: Sequence[float | None], max_fraction: float, tile_id: str) -> np.ndarray:
    """``image_CHW`` with nodata/NaN/Inf values set to 0, or BadRowError(RS_NODATA) when more
    than ``max_fraction`` of the pixels (a pixel counts when any band is bad) are nodata."""
    bad = nodata_mask(image_CHW, nodata)
    if not bad.any():
        return image_CHW
    fraction = float(bad.any(axis=0).mean())
    if fraction > max_fraction:
        raise BadRowError(
            Reason.RS_NODATA,
            tile_id,
            f"{fraction:.1%} of the pixels are nodata/NaN/Inf, above data.max_nodata_fraction={max_fraction:.1%}",
        )
    return np.where(bad, np.zeros((), image_CHW.dtype), image_CHW)


def decode_sv(obs: Mapping[str, Any], s3: storage.S3Options | None = None) -> np.ndarray:
    """An observation's street view as (H, W, 3) uint8."""
    obs_id = str(obs.get("obs_id"))
    data = load_image_bytes(obs.get("sv_bytes"), obs.get("sv_uri"), kind="sv", item_id=obs_id, s3=s3)
    try:
        return decode_jpeg(data)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        raise BadRowError(Reason.SV_UNDECODABLE, obs_id, f"not a readable image ({type(exc).__name__}: {exc})") from exc


def valid_observations(
    observations: Sequence[Mapping[str, Any]], geo_info: GeoInfo
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[BadRowError]]:
    """(ok (N,) bool, lonlat (N, 2), xy (N, 2), problems): the per-observation version of
    :func:`observation_xy`, for skipping bad observations instead of their tile."""
    n = len(observations)
    lonlat = np.array([[_num(o.get("lon")), _num(o.get("lat"))] for o in observations], dtype=np.float64).reshape(-1, 2)
    ok = np.ones(n, bool)
    problems: list[BadRowError] = []
    finite = np.isfinite(lonlat).all(axis=1)
    in_range = (np.abs(lonlat[:, 0]) <= 180) & (np.abs(lonlat[:, 1]) <= 90)
    xy = np.zeros((n, 2))
    good = finite & in_range
    if good.any():
        xy[good] = geo.lonlat_to_xy(lonlat[good], geo_info.crs, geo_info.transform, geo_info.width, geo_info.height)
    inside = geo.inside(xy) & good
    for i, o in enumerate(observations):
        where = f"lon, lat = {o.get('lon')}, {o.get('lat')}"
        if not finite[i]:
            problems.append(BadRowError(Reason.LONLAT_NAN, str(o.get("obs_id")), where))
        elif not in_range[i]:
            problems.append(BadRowError(Reason.LONLAT_OUT_OF_RANGE, str(o.get("obs_id")), where))
        elif not inside[i]:
            problems.append(
                BadRowError(
                    Reason.OBS_OUTSIDE_TILE, str(o.get("obs_id")), f"{where} maps to xy {xy[i].round(3).tolist()}"
                )
            )
        else:
            continue
        ok[i] = False
    return ok, lonlat, xy, problems


# ------------------------------------------------------------------------- sample


def row_rng(seed: int, epoch: int, tile_id: str, visit: int | None = None, copy: int = 0) -> np.random.Generator:
    """A generator that depends only on (seed, epoch, tile id[, visit][, copy]): the same draws on any
    worker, in any order. Each visit of a tile gets its own generator (crop, flips, extra points, and
    whatever other per-sample augmentation draws from it); ``visit=None`` is the tile's own (observation
    order). ``copy`` > 0: another copy of a tile drawn several times in one epoch (its own draws)."""
    digest = hashlib.blake2b(tile_id.encode(), digest_size=8).digest()
    key = [seed, epoch, int.from_bytes(digest, "little")] + ([2, copy] if copy else [])
    return np.random.default_rng(key if visit is None else [*key, 1, visit])


def observation_visits(ok: np.ndarray, k: int, rng: np.random.Generator | None, *, visit_all: bool) -> list[np.ndarray]:
    """Observation indices of each visit of a tile (``ok``: which observations are usable).

    ``visit_all``: ceil(n / k) visits (n usable observations, at least one visit) taking disjoint
    slices of a permutation drawn from ``rng`` (in order when ``rng`` is None), so together they
    present every usable observation once. Otherwise one visit: ``k`` usable observations sampled
    with ``rng``, or, without ``rng`` (evaluation), the first ``k`` observations of the row, so slot
    j is observation j (an unusable one stays an empty slot).
    """
    usable = np.flatnonzero(ok)
    if not visit_all:
        if rng is None:
            first = np.arange(min(len(ok), k))
            return [first[ok[first]]]
        if len(usable) <= k:
            return [usable]
        return [np.sort(rng.choice(usable, size=k, replace=False))]
    order = usable[rng.permutation(len(usable))] if rng is not None else usable
    if len(order) == 0:
        return [order]
    return [np.sort(order[i : i + k]) for i in range(0, len(order), k)]


def decode_row(
    row: Mapping[str, Any], spec: DecodeSpec, skipped: list[BadRowError] | None = None
) -> dict[str, np.ndarray]:
    """One manifest row -> its first sample (see :func:`decode_visits`)."""
    return decode_visits(row, spec, skipped)[0]


def decode_visits(
    row: Mapping[str, Any], spec: DecodeSpec, skipped: list[BadRowError] | None = None
) -> list[dict[str, np.ndarray]]:
    """One manifest row -> its samples this epoch, each of fixed shapes (K observations, M extra points).

    One sample, or ceil(N / K) with ``spec.visit_all`` (see :func:`observation_visits`). Each
    sample holds ``rs`` (C, S, S) float32 in [0, 1]; ``sv`` (K, V, V, 3) uint8 (normalized on the
    consumer); ``sv_mask`` (K,) bool; ``lonlat``, ``xy`` (K, 2) float32;
    ``xy_extra``, ``lonlat_extra`` (M, 2) float32.

    Raises :class:`BadRowError` if the tile is unusable. An unusable observation is skipped (its
    slot stays empty) and appended to ``skipped``.
    """
    tile_id = str(row.get("tile_id"))
    geo_info = check_georeference(row)
    # A null list element is an observation without coordinates (skipped as lonlat_nan).
    observations = [o if isinstance(o, Mapping) else {} for o in row.get("observations") or []]
    obs_ok, lonlat_all, xy_all, problems = valid_observations(observations, geo_info)
    visits = observation_visits(
        obs_ok,
        spec.obs_per_tile,
        row_rng(spec.seed, spec.epoch, tile_id, copy=spec.copy) if spec.augment else None,
        visit_all=spec.visit_all,
    )

    image, embedded = read_rs(row, geo_info, spec.s3)
    try:
        image = transforms.select_bands(image, list(row["band_names"]), spec.bands)
        nodata = [embedded.nodata[i] if i < len(embedded.nodata) else None for i in range(len(row["band_names"]))]
        nodata = list(transforms.select_bands(np.array(nodata, dtype=object), list(row["band_names"]), spec.bands))
    except KeyError as exc:
        raise BadRowError(Reason.RS_MISSING_BAND, tile_id, str(exc)) from exc
    image = fill_nodata(image, nodata, spec.max_nodata_fraction, tile_id)

    street_views: dict[int, np.ndarray] = {}
    for i in sorted({int(i) for v in visits for i in v}):
        try:
            street_views[i] = transforms.resize_sv(decode_sv(observations[i], spec.s3), spec.sv_size)
        except BadRowError as exc:
            problems.append(exc)
    if skipped is not None:
        skipped.extend(problems)
    return [
        _sample(image, visit, street_views, lonlat_all, xy_all, geo_info, spec, tile_id, v)
        for v, visit in enumerate(visits)
    ]


def _sample(
    image: np.ndarray,
    chosen: np.ndarray,
    street_views: Mapping[int, np.ndarray],
    lonlat_all: np.ndarray,
    xy_all: np.ndarray,
    geo_info: GeoInfo,
    spec: DecodeSpec,
    tile_id: str,
    visit: int,
) -> dict[str, np.ndarray]:
    """One visit of a tile: crop/flip the RS image, place its street views, draw its extra points."""
    rng = row_rng(spec.seed, spec.epoch, tile_id, visit, copy=spec.copy)
    chosen = np.array([i for i in chosen if int(i) in street_views], dtype=np.int64)
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
    # Without augmentation (evaluation) slot j is observation j; with it, the chosen ones packed.
    slots = chosen if not spec.augment and not spec.visit_all else np.arange(len(chosen))
    for slot, i in zip(slots, chosen):
        img = street_views[int(i)]
        if spec.augment and spec.sv_flip and rng.random() < 0.5:
            img = img[:, ::-1]
        sv[slot], mask[slot], lonlat[slot] = img, True, lonlat_all[i]
    if len(chosen):
        xy[slots] = aug.forward(xy_all[chosen])

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
    try:
        return float("nan") if v is None else float(v)
    except (TypeError, ValueError):
        return float("nan")


def empty_sample(spec: DecodeSpec) -> dict[str, np.ndarray]:
    """A zero sample of the right shapes (stands in for a bad row inside a batch)."""
    c, s, v, k, m = len(spec.bands), spec.rs_size, spec.sv_size, spec.obs_per_tile, spec.extra_points
    return {
        "rs": np.zeros((c, s, s), np.float32), "sv": np.zeros((k, v, v, 3), np.uint8),
        "sv_mask": np.zeros(k, bool), "lonlat": np.zeros((k, 2), np.float32), "xy": np.zeros((k, 2), np.float32),
        "xy_extra": np.zeros((m, 2), np.float32), "lonlat_extra": np.zeros((m, 2), np.float32),
    }  # fmt: skip


FLOAT_KEYS = ("rs", "lonlat", "xy", "xy_extra", "lonlat_extra")


def non_finite_rows(batch: Mapping[str, np.ndarray]) -> np.ndarray:
    """(B,) bool: rows of a stacked batch holding a NaN or Inf in any float array (a cheap guard)."""
    n = len(batch["rs"])
    bad = np.zeros(n, bool)
    for key in FLOAT_KEYS:
        if key in batch and n:
            bad |= ~np.isfinite(np.asarray(batch[key]).reshape(n, -1)).all(axis=1)
    return bad


def decode_rows(
    rows: Sequence[Mapping[str, Any]], spec: DecodeSpec, on_bad: Callable[[BadRowError], None] | None = None
) -> dict[str, np.ndarray]:
    """Decode many rows into stacked samples (one per visit) plus ``ok`` (bool), ``tile_id``,
    ``bad_reason`` and ``skipped_obs`` columns.

    Bad rows become one zero sample each with ``ok=False`` and ``bad_reason = "<reason>: <id>:
    <detail>"``; no exception of a row escapes (an unexpected one is ``decode_error``), only
    :class:`gair.data.storage.StorageUnavailableError` (the endpoint is down). ``skipped_obs``
    lists the tile's skipped observations (``"<reason>: <obs id>"`` joined by ``"|"``) on its first
    sample. ``on_bad`` sees every bad row.
    """
    samples, ok, reasons, tile_ids, skipped_col = [], [], [], [], []
    # One GDAL environment for the whole batch, without credentials (see gdal_env): rasterio.Env()
    # would build a boto3 session per call (~20 ms, ~1 ms a row), no Env one per open (3x slower).
    with gdal_env():
        for row in rows:
            _decode_one(row, spec, on_bad, samples, ok, reasons, tile_ids, skipped_col)
    template = empty_sample(spec)
    out = {key: np.stack([s[key] for s in samples]) if samples else template[key][None][:0] for key in template}
    out["ok"] = np.array(ok, dtype=bool)
    out["tile_id"] = np.array(tile_ids, dtype=object)
    out["bad_reason"] = np.array(reasons, dtype=object)
    out["skipped_obs"] = np.array(skipped_col, dtype=object)
    return out


def _decode_one(
    row: Mapping[str, Any],
    spec: DecodeSpec,
    on_bad: Callable[[BadRowError], None] | None,
    samples: list,
    ok: list,
    reasons: list,
    tile_ids: list,
    skipped_col: list,
) -> None:
    """Append one row's samples (or its one bad placeholder) to the columns of :func:`decode_rows`."""
    tile_id = str(row.get("tile_id"))
    skipped: list[BadRowError] = []
    try:
        visits = decode_visits(row, spec, skipped)
        for s in visits:
            if non_finite_rows({k: v[None] for k, v in s.items()})[0]:
                raise BadRowError(Reason.NON_FINITE, tile_id, "a decoded array holds NaN or Inf")
    except storage.StorageUnavailableError:
        raise  # an unreachable endpoint is no bad row: every row would be; let the run fail and retry
    except Exception as exc:  # noqa: BLE001 - a bad row is counted, never a crashed task
        err = exc if isinstance(exc, BadRowError) else BadRowError(Reason.DECODE_ERROR, tile_id, repr(exc))
        if on_bad is not None:
            on_bad(err)
        visits, skipped = [empty_sample(spec)], []  # the tile is dropped: its observations are not counted
        ok.append(False)
        reasons.append(f"{err.reason}: {err.item_id}: {err.detail}")
    else:
        ok.extend([True] * len(visits))
        reasons.extend([""] * len(visits))
    obs_skips = "|".join(f"{e.reason}: {e.item_id}" for e in skipped)
    samples.extend(visits)
    tile_ids.extend([tile_id] * len(visits))
    skipped_col.extend([obs_skips] + [""] * (len(visits) - 1))
