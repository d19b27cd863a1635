"""Embeddings of raw inputs, preprocessed exactly as training saw them (no MLflow, no Ray).

One class, :class:`Embedder`, used by the MLflow pyfunc model (``gair.serving.pyfunc``)
and by the Ray Data actors of ``jobs/embed.py`` (``gair.serving.batch``), so the served
model and the batch export cannot drift apart. The preprocessing is the training path of
``gair.data.decode.decode_row`` without augmentation:

- RS: GeoTIFF -> ``select_bands`` (the model's bands, by name) -> ``fill_nodata`` (nodata,
  NaN, Inf -> 0; a tile with more than ``max_nodata_fraction`` of them is an error) -> ``normalize_s2`` ->
  ``resize_chw`` to the model size; a query point (lon, lat) goes through the tile's CRS
  and affine transform to normalized image coordinates (``gair.geo.lonlat_to_xy``).
- SV: JPEG/PNG -> ``resize_sv`` -> ``normalize_sv`` with the street-view statistics the
  export was trained with (``config.json`` ``preprocessing``).
- Location: (lon, lat) degrees, checked.

Shapes: N points/images, C bands, S RS size, V SV size, T tokens, D embedding width.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gair import geo
from gair.data import decode, storage, transforms
from gair.models.gair import GAIR


@dataclass(frozen=True)
class Tile:
    """An RS tile ready for the model: (C, S, S) float32 in [0, 1] and its georeference."""

    rs_CSS: np.ndarray
    info: decode.GeoInfo

    def xy(self, lonlat_N2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(normalized image coordinates (N, 2), inside mask (N,)) of (lon, lat) points."""
        xy = geo.lonlat_to_xy(lonlat_N2, self.info.crs, self.info.transform, self.info.width, self.info.height)
        return xy, geo.inside(xy)

    def footprint_lonlat(self) -> np.ndarray:
        """The tile outline as a closed ring of (lon, lat): 4 corners + the first again."""
        corners = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0]])
        return geo.xy_to_lonlat(corners, self.info.crs, self.info.transform, self.info.width, self.info.height)


def default_sv_statistics() -> tuple[tuple[float, ...], tuple[float, ...]]:
    from gair.configs.data import DataConfig

    d = DataConfig()
    return tuple(d.sv_mean), tuple(d.sv_std)


class Embedder:
    """A GAIR model plus the preprocessing it was trained with."""

    def __init__(
        self,
        model: GAIR,
        sv_mean: Sequence[float] | None = None,
        sv_std: Sequence[float] | None = None,
        s3: storage.S3Options | None = None,
        batch_size: int = 32,
    ) -> None:
        self.model = model.eval()
        self.cfg = model.cfg
        self.device = next(model.parameters()).device
        mean, std = default_sv_statistics()
        self.sv_mean = tuple(sv_mean or mean)
        self.sv_std = tuple(sv_std or std)
        self.s3 = s3 or storage.S3Options()
        self.batch_size = batch_size
        self.max_nodata_fraction = decode.DecodeSpec((), 0, 0, 0, 0).max_nodata_fraction  # training's default

    @property
    def dim(self) -> int:
        return self.model.embed_dim

    @classmethod
    def from_export(cls, directory: str | Path, device: str | torch.device = "cpu", **kwargs) -> Embedder:
        """Load a ``gair.hub`` export (or the pyfunc model directory around one) with its statistics."""
        from gair.hub import load_preprocessing, load_pretrained

        pre = load_preprocessing(directory)
        return cls(load_pretrained(directory, map_location=device), pre.get("sv_mean"), pre.get("sv_std"), **kwargs)

    # ------------------------------------------------------------------ location

    @torch.no_grad()
    def locations(self, lonlat_N2: np.ndarray) -> np.ndarray:
        """(N, 2) (lon, lat) degrees -> (N, D) location embeddings; ValueError on bad coordinates."""
        ll = geo.check_lonlat(np.asarray(lonlat_N2, dtype=np.float64).reshape(-1, 2))
        out = [
            self.model.encode_location(torch.from_numpy(ll[i : i + 4096]).float().to(self.device)).float().cpu()
            for i in range(0, len(ll), 4096)
        ]
        return torch.cat(out).numpy() if out else np.zeros((0, self.dim), np.float32)

    # ------------------------------------------------------------------------ RS

    def prepare_rs(
        self, image_CHW: np.ndarray, band_names: Sequence[str], nodata: Sequence[float | None] = (), tile_id: str = ""
    ) -> np.ndarray:
        """Raw tile pixels (named bands, per-band nodata values) -> (C, S, S) as the model was trained on."""
        bands = tuple(self.cfg.rs_bands)
        names = list(band_names)
        image = transforms.select_bands(image_CHW, names, bands)
        per_band = np.array([nodata[i] if i < len(nodata) else None for i in range(len(names))], dtype=object)
        image = decode.fill_nodata(
            image, list(transforms.select_bands(per_band, names, bands)), self.max_nodata_fraction, tile_id
        )
        return transforms.resize_chw(transforms.normalize_s2(image, bands), self.cfg.rs_image_size)

    def load_tile(self, uri: str) -> Tile:
        """A GeoTIFF (local path or URI) in the manifest's format: band names from its band
        descriptions, else the Sentinel-2 defaults for its band count (``build_manifest``'s rule)."""
        from gair.data.manifest import read_tile_header

        info, band_names, data = read_tile_header(uri, self.s3)
        image, embedded = decode.decode_geotiff(data)
        return Tile(self.prepare_rs(image, band_names, embedded.nodata, uri), info)

    def manifest_tile(self, row: dict) -> Tile:
        """A manifest row's tile (inline bytes or URI), checked like training checks it."""
        info = decode.check_georeference(row)
        image, embedded = decode.read_rs(row, info, self.s3)
        try:
            return Tile(self.prepare_rs(image, list(row["band_names"]), embedded.nodata, str(row.get("tile_id"))), info)
        except KeyError as exc:
            raise decode.BadRowError(decode.Reason.RS_MISSING_BAND, str(row.get("tile_id")), str(exc)) from exc

    @torch.no_grad()
    def rs_tokens(self, rs_BCSS: np.ndarray) -> torch.Tensor:
        """(B, C, S, S) -> (B, T, D) tokens on the model's device."""
        return self.model.rs_tokens(torch.from_numpy(np.ascontiguousarray(rs_BCSS)).float().to(self.device))

    @torch.no_grad()
    def rs_global(self, tokens_BTD: torch.Tensor) -> np.ndarray:
        """(B, T, D) -> (B, D): the global RS embedding (mean of the tokens)."""
        return tokens_BTD.mean(1).float().cpu().numpy()

    @torch.no_grad()
    def rs_local(self, tokens_1TD: torch.Tensor, xy_N2: np.ndarray, mode: str | None = None) -> np.ndarray:
        """Localized RS embeddings of one tile at N normalized points (NILI unless ``mode``): (N, D)."""
        if len(xy_N2) == 0:
            return np.zeros((0, self.dim), np.float32)
        xy = torch.from_numpy(np.asarray(xy_N2, dtype=np.float32)).to(self.device)[None]
        return self.model.query_tokens(tokens_1TD, xy, mode).float().cpu().numpy()[0]

    # ------------------------------------------------------------------------ SV

    def read_image(self, ref: str | bytes) -> np.ndarray:
        """A street view given as bytes, base64 text or a path/URI -> (H, W, 3) uint8."""
        data = image_bytes(ref, self.s3)
        try:
            return decode.decode_jpeg(data)
        except Exception as exc:  # noqa: BLE001 - PIL raises several types for garbage input
            raise ValueError(f"not a readable image ({type(exc).__name__}: {exc})") from exc

    @torch.no_grad()
    def street_views(self, images_HWC: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Street views -> (encoder output (N, D), projected into the RS/location space (N, D))."""
        v = self.cfg.sv_image_size
        pooled, projected = [], []
        for i in range(0, len(images_HWC), self.batch_size):
            chunk = np.stack([transforms.resize_sv(im, v) for im in images_HWC[i : i + self.batch_size]])
            sv_B1VV3 = torch.from_numpy(chunk)[:, None].to(self.device)
            mask_B1 = torch.ones(sv_B1VV3.shape[:2], dtype=torch.bool, device=self.device)
            x_B3VV = transforms.normalize_sv(sv_B1VV3, mask_B1, self.sv_mean, self.sv_std)[:, 0]
            emb = self.model.encode_sv(x_B3VV)
            pooled.append(emb.float().cpu())
            projected.append(self.model.project_sv(emb).float().cpu())
        if not pooled:
            empty = np.zeros((0, self.dim), np.float32)
            return empty, empty.copy()
        return torch.cat(pooled).numpy(), torch.cat(projected).numpy()


def image_bytes(ref: str | bytes, s3: storage.S3Options | None = None) -> bytes:
    """Bytes of an image reference: raw bytes, ``data:...;base64,`` or bare base64 text, or a path/URI.

    A URI with a scheme, or an existing local path, is read; anything else must be base64
    (a JPEG in base64 starts with ``/9j/``, so a leading ``/`` alone does not mean a path).
    """
    if isinstance(ref, (bytes, bytearray, memoryview)):
        return bytes(ref)
    text = str(ref).strip()
    if text.startswith("data:") and ";base64," in text:
        text = text.split(";base64,", 1)[1]
    elif "://" in text[:16] or _is_file(text):
        return storage.read_bytes(text, s3)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        pass
    try:
        return storage.read_bytes(text, s3)
    except FileNotFoundError as exc:
        raise ValueError(f"image reference {text[:60]!r} is neither an existing path/URI nor base64") from exc


def _is_file(text: str) -> bool:
    try:
        return len(text) < 4096 and Path(text).expanduser().is_file()
    except OSError:  # e.g. a name too long: base64, not a path
        return False
