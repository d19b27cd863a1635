"""One cell -> one tile: choose the scene, read only the cell's window of each band, check it, encode it.

For each cell the candidate scenes (same CRS, overlapping the cell, holding every band
asked for) are ranked by scene-level cloud cover, then by distance in time to the street
views' capture times; the first ``max_scenes_per_cell`` are examined. A scene with a
scene classification band (SCL) gets its cloud and no-data fractions measured inside the
cell (one small windowed read); the cell then takes the scene with the least cloud in
the cell, then the nearest in time. Bands are read with windowed reads (only the COG tiles
under the cell are fetched), 20 m and 60 m bands are resampled to ``resolution_m``, and
the bands are stacked in the manifest's order. The tile keeps the scene's CRS with a
north-up transform whose origin is the cell's corner.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gair.configs.prepare import PrepareConfig
from gair.data import decode, manifest, storage
from gair.prepare import rangeio
from gair.prepare.inputs import SCL, Scene, parse_time


class Reject:
    """Reasons in the rejects table (stable strings, like :class:`gair.data.decode.Reason`)."""

    CLOUDY = "cloudy"  # the best scene's cloud fraction in the cell is over max_cloud_fraction
    NODATA = "nodata"  # the best scene's no-data fraction in the cell is over max_nodata_fraction
    NO_SCENE = "no_scene"  # no scene (with all the bands) covers the cell or the street view
    TOO_FEW_OBS = "too_few_obs"  # the cell holds fewer than min_obs street views
    SCENE_UNREADABLE = "scene_unreadable"  # a band file could not be read
    LONLAT_NAN = decode.Reason.LONLAT_NAN
    LONLAT_OUT_OF_RANGE = decode.Reason.LONLAT_OUT_OF_RANGE
    SV_MISSING_FILE = decode.Reason.SV_MISSING_FILE


@dataclass(frozen=True)
class CutOptions:
    """What cutting needs from the config (picklable, no secrets)."""

    bands: tuple[str, ...]
    tile_pixels: int
    resolution_m: float
    resampling: str
    max_cloud_fraction: float
    max_nodata_fraction: float
    cloud_classes: tuple[int, ...]
    nodata_classes: tuple[int, ...]
    max_scenes_per_cell: int
    inline: bool
    sv_inline: bool
    tiles_uri: str  # where non-inline tiles go
    s3: storage.S3Options = field(default_factory=storage.S3Options)

    @classmethod
    def from_config(cls, cfg: PrepareConfig) -> CutOptions:
        s3 = storage.S3Options.from_config(cfg).resolved()
        return cls(
            tuple(cfg.bands), cfg.tile_pixels, cfg.resolution_m, cfg.resampling, cfg.max_cloud_fraction,
            cfg.max_nodata_fraction, tuple(cfg.cloud_classes), tuple(cfg.nodata_classes), cfg.max_scenes_per_cell,
            cfg.inline, cfg.sv_inline, storage.join(cfg.out, "tiles"), s3,
        )  # fmt: skip


@dataclass
class CellResult:
    cell_id: str
    row: dict[str, Any] | None = None
    scene_id: str | None = None
    rejects: list[tuple[str, str, str]] = field(default_factory=list)  # (id, reason, detail)


@dataclass
class _Candidate:
    scene: Scene
    dt_days: float
    cloud: float
    nodata: float | None  # None: unknown until the bands are read (no SCL)
    scl_nodata: np.ndarray | None = None  # (S, S) no-data mask from the SCL band

    def ok(self, opts: CutOptions) -> bool:
        return self.cloud <= opts.max_cloud_fraction and (self.nodata or 0.0) <= opts.max_nodata_fraction


def tile_transform(bounds: Sequence[float], resolution_m: float) -> tuple[float, ...]:
    """North-up affine (a, b, c, d, e, f) with its origin at the cell's top-left corner."""
    left, _, _, top = bounds
    return (resolution_m, 0.0, float(left), 0.0, -resolution_m, float(top))


def _resampling(name: str):  # noqa: ANN202
    from rasterio.enums import Resampling

    return getattr(Resampling, name)


def read_window(src: Any, indexes: Sequence[int], bounds: Sequence[float], size: int, resampling: str) -> np.ndarray:
    """Bands ``indexes`` of an open dataset over ``bounds`` (its CRS), resampled to (len, size, size).

    Pixels outside the dataset are 0 (Sentinel-2 L2A's no-data value).
    """
    from rasterio.windows import from_bounds

    win = from_bounds(*bounds, transform=src.transform)
    eps = 1e-6
    inside = (
        win.col_off >= -eps and win.row_off >= -eps
        and win.col_off + win.width <= src.width + eps and win.row_off + win.height <= src.height + eps
    )  # fmt: skip
    kwargs = {} if inside else {"boundless": True, "fill_value": 0}
    return src.read(
        list(indexes), window=win, out_shape=(len(indexes), size, size), resampling=_resampling(resampling), **kwargs
    )


def read_bands(
    scene: Scene, names: Sequence[str], bounds: Sequence[float], opts: CutOptions, counter: rangeio.ByteCounter
) -> np.ndarray:
    """(len(names), S, S) stack of the scene's bands over the cell, in ``names`` order."""
    by_file: dict[str, list[tuple[int, int]]] = {}
    for pos, name in enumerate(names):
        src = scene.bands[name]
        by_file.setdefault(src.uri, []).append((pos, src.index))
    out: np.ndarray | None = None
    for uri, items in by_file.items():
        with rangeio.open_raster(uri, counter, opts.s3) as src:
            res = "nearest" if names[items[0][0]] == SCL else opts.resampling
            arr = read_window(src, [i for _, i in items], bounds, opts.tile_pixels, res)
        if out is None:
            out = np.zeros((len(names), opts.tile_pixels, opts.tile_pixels), arr.dtype)
        for k, (pos, _) in enumerate(items):
            out[pos] = arr[k]
    assert out is not None
    return out


def rank_scenes(scenes: Sequence[Scene], obs_times: Sequence[str | None]) -> list[tuple[Scene, float]]:
    """(scene, |time difference| in days) by scene cloud cover, then time (unknown cloud counts as 0)."""
    times = [t for t in (parse_time(s) for s in obs_times) if t is not None]
    mean_t = float(np.mean(times)) if times else None
    ranked = []
    for s in scenes:
        t = parse_time(s.datetime)
        dt = abs(t - mean_t) / 86400.0 if (t is not None and mean_t is not None) else 0.0
        ranked.append((s, dt))
    return sorted(ranked, key=lambda p: (p[0].cloud_cover or 0.0, p[1], p[0].scene_id))


def cut_cell(
    cell: Mapping[str, Any], scenes: Mapping[str, Scene], opts: CutOptions, counter: rangeio.ByteCounter
) -> CellResult:
    """The manifest row of one cell, or its rejection.

    ``cell``: ``cell_id``, ``crs``, ``bounds``, ``observations`` (manifest observation dicts
    plus ``image``), ``scene_ids``.
    """
    cid, bounds = cell["cell_id"], tuple(cell["bounds"])
    result = CellResult(cid)
    observations = list(cell["observations"])
    usable = [scenes[s] for s in cell["scene_ids"] if all(b in scenes[s].bands for b in opts.bands)]
    if not usable:
        detail = f"{len(cell['scene_ids'])} overlapping scene(s), none with all bands {list(opts.bands)}"
        result.rejects.append((cid, Reject.NO_SCENE, detail))
        return result
    ranked = rank_scenes(usable, [o.get("capture_time") for o in observations])[: opts.max_scenes_per_cell]
    candidates = []
    for scene, dt in ranked:
        try:
            candidates.append(_measure(scene, dt, bounds, opts, counter))
        except Exception as exc:  # noqa: BLE001 - an unreadable scene is a rejection, not a crash
            result.rejects.append((cid, Reject.SCENE_UNREADABLE, f"scene {scene.scene_id} SCL: {exc}"))
    # Least cloud in the cell (to the percent), then nearest in time; acceptable ones first.
    candidates.sort(key=lambda c: (not c.ok(opts), round(c.cloud, 2), c.dt_days, c.nodata or 0.0))
    first_failure: tuple[str, str, str] | None = None
    for c in candidates:
        failure = _failure(cid, c, opts, len(candidates))
        if failure is not None:
            first_failure = first_failure or failure
            continue
        try:
            image = read_bands(c.scene, opts.bands, bounds, opts, counter)
        except Exception as exc:  # noqa: BLE001
            result.rejects.append((cid, Reject.SCENE_UNREADABLE, f"scene {c.scene.scene_id}: {exc}"))
            continue
        nodata = (image == 0).all(axis=0)  # 0 in every band: outside the scene's data
        if c.scl_nodata is not None:
            nodata |= c.scl_nodata
        c.nodata = float(nodata.mean())
        failure = _failure(cid, c, opts, len(candidates))
        if failure is not None:
            first_failure = first_failure or failure
            continue
        result.row, result.scene_id = _tile_row(cell, c.scene, image, opts, result), c.scene.scene_id
        return result
    if first_failure is not None:
        result.rejects.insert(0, first_failure)
    elif not result.rejects:
        result.rejects.append((cid, Reject.NO_SCENE, "no readable scene"))
    return result


def _measure(
    scene: Scene, dt: float, bounds: Sequence[float], opts: CutOptions, counter: rangeio.ByteCounter
) -> _Candidate:
    if SCL not in scene.bands:  # no classification: the scene-level cloud cover stands in for the cell's
        return _Candidate(scene, dt, (scene.cloud_cover or 0.0) / 100.0, None)
    scl = read_bands(scene, [SCL], bounds, opts, counter)[0]
    nodata = np.isin(scl, opts.nodata_classes)
    return _Candidate(scene, dt, float(np.isin(scl, opts.cloud_classes).mean()), float(nodata.mean()), nodata)


def _failure(cid: str, c: _Candidate, opts: CutOptions, examined: int) -> tuple[str, str, str] | None:
    if c.cloud > opts.max_cloud_fraction:
        detail = f"scene {c.scene.scene_id}: cloud {c.cloud:.3f} > {opts.max_cloud_fraction} ({examined} examined)"
        return (cid, Reject.CLOUDY, detail)
    if c.nodata is not None and c.nodata > opts.max_nodata_fraction:
        detail = f"scene {c.scene.scene_id}: no data {c.nodata:.3f} > {opts.max_nodata_fraction} ({examined} examined)"
        return (cid, Reject.NODATA, detail)
    return None


def _tile_row(
    cell: Mapping[str, Any], scene: Scene, image: np.ndarray, opts: CutOptions, result: CellResult
) -> dict[str, Any]:
    crs, size = cell["crs"], opts.tile_pixels
    info = decode.GeoInfo(crs, tile_transform(cell["bounds"], opts.resolution_m), size, size)
    tif = encode_cog(image, info, opts.bands, {"GAIR_SCENE_ID": scene.scene_id, "GAIR_CELL_ID": cell["cell_id"]})
    kept = []
    for o in cell["observations"]:
        obs = {k: v for k, v in o.items() if k != "image"}
        if opts.sv_inline:
            try:
                obs["sv_bytes"], obs["sv_uri"] = storage.read_bytes(o["image"], opts.s3), None
            except FileNotFoundError:
                result.rejects.append((o["obs_id"], Reject.SV_MISSING_FILE, f"{o['image']} not found"))
                continue
        kept.append(obs)
    rs_uri = None
    if not opts.inline:
        rs_uri = storage.join(opts.tiles_uri, f"{cell['cell_id']}.tif")
        storage.write_bytes(rs_uri, tif, opts.s3)
    return manifest.tile_row(
        cell["cell_id"], info, opts.bands, kept, rs_bytes=tif if opts.inline else None, rs_uri=rs_uri
    )


def encode_cog(
    image_CHW: np.ndarray, info: decode.GeoInfo, band_names: Sequence[str], tags: Mapping[str, str]
) -> bytes:
    """A Cloud-Optimized GeoTIFF (deflate, 256 px internal tiles) with band names as descriptions."""
    from affine import Affine
    from rasterio.io import MemoryFile

    c, h, w = image_CHW.shape
    profile = {
        "driver": "COG", "width": w, "height": h, "count": c, "dtype": image_CHW.dtype.name, "crs": info.crs,
        "transform": Affine(*info.transform), "compress": "deflate", "predictor": 2, "blocksize": 256,
    }  # fmt: skip
    with decode.gdal_env(), MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(image_CHW)
            for i, name in enumerate(band_names):
                dst.set_band_description(i + 1, name)
            dst.update_tags(**tags)
        return mem.read()


def observation_dict(
    obs_id: str, lonlat: Sequence[float], image: str, capture_time: str | None, heading: float | None
) -> dict[str, Any]:
    """A manifest observation plus ``image`` (the SV URI, kept until the row is built)."""
    o = manifest.observation(
        obs_id, (float(lonlat[0]), float(lonlat[1])), sv_uri=image, capture_time=capture_time,
        heading=None if heading is None or math.isnan(heading) else float(heading),
    )  # fmt: skip
    o["image"] = image
    return o
