"""Pure array transforms of RS tiles, street views and their query points (numpy/torch only).

Shapes: C bands, H x W source pixels, S model RS size, V street-view size, N points.
Points are normalized image coordinates ``xy`` in [-1, 1] (x right, y down,
``align_corners=False``), see ``gair/geo.py``.

Augmentation is *geometry-consistent*: an RS crop or flip is a :class:`GeometryAug`, an
affine map of normalized coordinates, and every query point goes through the same map as
the pixels, so a street view still points at the RS content it was taken above.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from gair.sensors import S2_MEAN, S2_STD

if TYPE_CHECKING:
    import torch

# torch is imported in the functions that use it, not here: a process that only unpickles a
# decode recipe (the coordinator of a Ray Data split: gair.data.decode imports this module)
# must not pay torch's import (~2.5 s, ~400 MB) for it.


def select_bands(image_CHW: np.ndarray, band_names: Sequence[str], wanted: Sequence[str]) -> np.ndarray:
    """The bands ``wanted`` of ``image_CHW`` (whose bands are named ``band_names``), in that order."""
    index = {name: i for i, name in enumerate(band_names)}
    missing = [b for b in wanted if b not in index]
    if missing:
        raise KeyError(f"bands {missing} not in tile bands {list(band_names)}")
    return image_CHW[[index[b] for b in wanted]]


def normalize_s2(image_CHW: np.ndarray, bands: Sequence[str]) -> np.ndarray:
    """(x - (mean - 2 std)) / (4 std), clipped to [0, 1], per band; float32."""
    mean = np.array([S2_MEAN[b] for b in bands], dtype=np.float32)[:, None, None]
    std = np.array([S2_STD[b] for b in bands], dtype=np.float32)[:, None, None]
    low = mean - 2.0 * std
    out = (image_CHW.astype(np.float32) - low) / (4.0 * std)
    return np.clip(out, 0.0, 1.0, out=out)


def resize_chw(image_CHW: np.ndarray, size: int) -> np.ndarray:
    """Bicubic (antialiased) resize of a float image to ``size x size``, clipped to [0, 1]."""
    if image_CHW.shape[1:] == (size, size):
        return np.ascontiguousarray(image_CHW, dtype=np.float32)
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(image_CHW, dtype=np.float32))[None]
    # align_corners=False keeps normalized coordinates unchanged by the resize.
    y = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return y[0].clamp_(0.0, 1.0).numpy()


@dataclass(frozen=True)
class GeometryAug:
    """A crop (in source pixels) followed by optional flips, of a ``width x height`` image."""

    width: int
    height: int
    x0: float = 0.0
    y0: float = 0.0
    crop_w: float | None = None
    crop_h: float | None = None
    flip_x: bool = False
    flip_y: bool = False

    @property
    def cw(self) -> float:
        return float(self.width if self.crop_w is None else self.crop_w)

    @property
    def ch(self) -> float:
        return float(self.height if self.crop_h is None else self.crop_h)

    def forward(self, xy: np.ndarray) -> np.ndarray:
        """Source normalized coordinates -> augmented-image normalized coordinates."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        cols = (xy[:, 0] + 1.0) * self.width / 2.0 - self.x0
        rows = (xy[:, 1] + 1.0) * self.height / 2.0 - self.y0
        out = np.stack([2.0 * cols / self.cw - 1.0, 2.0 * rows / self.ch - 1.0], axis=-1)
        if self.flip_x:
            out[:, 0] = -out[:, 0]
        if self.flip_y:
            out[:, 1] = -out[:, 1]
        return out

    def inverse(self, xy: np.ndarray) -> np.ndarray:
        """Augmented-image normalized coordinates -> source normalized coordinates."""
        xy = np.array(xy, dtype=np.float64).reshape(-1, 2)
        if self.flip_x:
            xy[:, 0] = -xy[:, 0]
        if self.flip_y:
            xy[:, 1] = -xy[:, 1]
        cols = (xy[:, 0] + 1.0) * self.cw / 2.0 + self.x0
        rows = (xy[:, 1] + 1.0) * self.ch / 2.0 + self.y0
        return np.stack([2.0 * cols / self.width - 1.0, 2.0 * rows / self.height - 1.0], axis=-1)

    def apply(self, image_CHW: np.ndarray) -> np.ndarray:
        """Crop (integer pixel window) and flip an image; returns a view where possible."""
        assert image_CHW.shape[1:] == (self.height, self.width), (image_CHW.shape, self.height, self.width)
        x0, y0 = int(round(self.x0)), int(round(self.y0))
        out = image_CHW[:, y0 : y0 + int(round(self.ch)), x0 : x0 + int(round(self.cw))]
        if self.flip_x:
            out = out[:, :, ::-1]
        if self.flip_y:
            out = out[:, ::-1, :]
        return out


def sample_geometry_aug(
    rng: np.random.Generator,
    width: int,
    height: int,
    *,
    min_scale: float,
    keep_xy: np.ndarray | None = None,
) -> GeometryAug:
    """A random crop (each side a fraction in [min_scale, 1]) and random flips.

    The crop is an integer pixel window chosen to contain every point of ``keep_xy``
    (source normalized coordinates), growing when they spread wider than the sampled
    size, so that augmentation never throws a street view out of its tile.
    """
    cw = _crop_side(rng, width, min_scale, keep_xy[:, 0] if keep_xy is not None and len(keep_xy) else None)
    ch = _crop_side(rng, height, min_scale, keep_xy[:, 1] if keep_xy is not None and len(keep_xy) else None)
    return GeometryAug(width, height, cw[0], ch[0], cw[1], ch[1], bool(rng.random() < 0.5), bool(rng.random() < 0.5))


def _crop_side(rng: np.random.Generator, n: int, min_scale: float, keep: np.ndarray | None) -> tuple[int, int]:
    """(start, length) of a crop of a side of ``n`` pixels, containing the ``keep`` coordinates."""
    length = int(round(n * rng.uniform(min_scale, 1.0))) if min_scale < 1.0 else n
    lo_needed, hi_needed = n, 0  # pixel interval [lo, hi) that must stay inside the crop
    if keep is not None:
        px = (np.asarray(keep, dtype=np.float64) + 1.0) * n / 2.0
        lo_needed = int(np.floor(px.min()))
        hi_needed = int(np.floor(px.max())) + 1  # the pixel holding the point must be inside
        lo_needed, hi_needed = max(0, lo_needed), min(n, max(hi_needed, lo_needed + 1))
        length = max(length, hi_needed - lo_needed)
    length = max(1, min(length, n))
    start_min = max(0, hi_needed - length) if keep is not None else 0
    start_max = min(lo_needed, n - length) if keep is not None else n - length
    start = int(rng.integers(start_min, start_max + 1)) if start_max > start_min else start_min
    return start, length


def resize_sv(image_HWC: np.ndarray, size: int) -> np.ndarray:
    """Bicubic resize of a uint8 street view to ``size x size`` (uint8, HWC)."""
    if image_HWC.shape[:2] == (size, size):
        return np.ascontiguousarray(image_HWC)
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.require(image_HWC, requirements=["C", "W"])).permute(2, 0, 1)[None].float()
    y = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return y[0].permute(1, 2, 0).round_().clamp_(0, 255).to(torch.uint8).numpy()


def normalize_sv(
    sv_BKVVC: torch.Tensor, mask_BK: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """uint8 street views (B, K, V, V, 3) -> float32 (B, K, 3, V, V), normalized; zeros where padded."""
    import torch

    b, k, v, w, c = sv_BKVVC.shape
    # One strided copy into channel-first float32, then one fused multiply-subtract in place:
    # (x / 255 - mean) / std == x * (1 / (255 std)) - mean / std (equal to within float rounding).
    x = torch.empty((b, k, c, v, w), dtype=torch.float32, device=sv_BKVVC.device)
    x.copy_(sv_BKVVC.permute(0, 1, 4, 2, 3))
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, 1, 3, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, 1, 3, 1, 1)
    x.mul_(1.0 / (255.0 * s)).sub_(m / s)
    return x.mul_(mask_BK[:, :, None, None, None].to(x.dtype))


def color_jitter_bands(
    image_CHW: np.ndarray,
    rng: np.random.Generator,
    band_index: Sequence[int],
    *,
    brightness: float,
    contrast: float,
    p: float,
) -> np.ndarray:
    """With probability ``p``, torchvision's ColorJitter(brightness, contrast) on three bands.

    The reference's ``SentinelColorJitterTransform``: the bands ``band_index`` of an RS image
    in [0, 1] are jittered together as one 3-channel image (contrast blends with its
    grayscale mean), the other bands are untouched. Draws come from the row's ``rng``.
    """
    if p <= 0 or rng.random() >= p:
        return image_CHW
    if len(band_index) != 3:
        raise ValueError(f"colour jitter needs exactly three bands, got {list(band_index)}")
    import torch

    out = np.array(image_CHW, dtype=np.float32, copy=True)
    rgb = torch.from_numpy(out[list(band_index)])
    out[list(band_index)] = _jitter(rgb, rng, brightness, contrast, 0.0, 0.0).numpy()
    return out


def color_jitter_sv(
    image_HWC: np.ndarray, rng: np.random.Generator, strength: Sequence[float], *, p: float
) -> np.ndarray:
    """With probability ``p``, ColorJitter(brightness, contrast, saturation, hue = ``strength``) of a uint8 view.

    The reference applies ``RandomApply([ColorJitter(0.1, 0.1, 0.1, 0.1)], p=0.3)``; here it
    acts on the image in [0, 1] before the per-channel normalization (the reference's comes
    after its normalization, where ColorJitter's clamp to [0, 1] would cut negative values).
    """
    if p <= 0 or rng.random() >= p:
        return image_HWC
    import torch

    x = torch.from_numpy(np.ascontiguousarray(image_HWC)).permute(2, 0, 1).float().div_(255.0)
    y = _jitter(x, rng, *strength)
    return y.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def _jitter(
    x_3HW: torch.Tensor, rng: np.random.Generator, brightness: float, contrast: float, saturation: float, hue: float
) -> torch.Tensor:
    """torchvision ColorJitter's computation (random order, uniform factors) with numpy draws."""
    from torchvision.transforms.v2 import functional as TF  # noqa: PLC0415  (deferred: optional at import)

    ops = []
    if brightness:
        ops.append((TF.adjust_brightness, float(rng.uniform(max(0.0, 1 - brightness), 1 + brightness))))
    if contrast:
        ops.append((TF.adjust_contrast, float(rng.uniform(max(0.0, 1 - contrast), 1 + contrast))))
    if saturation:
        ops.append((TF.adjust_saturation, float(rng.uniform(max(0.0, 1 - saturation), 1 + saturation))))
    if hue:
        ops.append((TF.adjust_hue, float(rng.uniform(-hue, hue))))
    for i in rng.permutation(len(ops)):
        fn, factor = ops[i]
        x_3HW = fn(x_3HW, factor)
    return x_3HW
