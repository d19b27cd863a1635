from __future__ import annotations

import numpy as np
import pytest
import torch

from gair import sensors
from gair.data import transforms


def test_normalize_s2_maps_mean_minus_2std_to_0_and_plus_2std_to_1() -> None:
    bands = ("B2", "B8A")
    mean = np.array([sensors.S2_MEAN[b] for b in bands])
    std = np.array([sensors.S2_STD[b] for b in bands])
    image = np.stack([np.full((2, 2), m + k * s) for m, s, k in zip(mean, std, (-2, 2), strict=True)]).astype(
        np.float32
    )
    out = transforms.normalize_s2(image, bands)
    np.testing.assert_allclose(out[0], 0.0, atol=1e-5)
    np.testing.assert_allclose(out[1], 1.0, atol=1e-5)
    clipped = transforms.normalize_s2(np.full((2, 1, 1), 60000, np.uint16), bands)
    assert clipped.max() == 1.0 and clipped.dtype == np.float32


def test_select_bands_orders_and_rejects_missing() -> None:
    image = np.arange(3)[:, None, None] * np.ones((3, 2, 2))
    out = transforms.select_bands(image, ["B1", "B2", "B3"], ["B3", "B1"])
    assert out[:, 0, 0].tolist() == [2, 0]
    with pytest.raises(KeyError, match="B8A"):
        transforms.select_bands(image, ["B1", "B2", "B3"], ["B8A"])


def _pixel_xy(col: int, row: int, w: int, h: int) -> np.ndarray:
    return np.array([[2 * (col + 0.5) / w - 1, 2 * (row + 0.5) / h - 1]])


@pytest.mark.parametrize("seed", range(12))
def test_augmentation_moves_points_with_pixels(seed: int) -> None:
    """Plant a bright pixel under a query point; after crop+flip the point must still be on it."""
    rng = np.random.default_rng(seed)
    w, h = 40, 30
    col, row = int(rng.integers(0, w)), int(rng.integers(0, h))
    image = np.zeros((2, h, w), np.float32)
    image[:, row, col] = 1.0
    xy = _pixel_xy(col, row, w, h)
    aug = transforms.sample_geometry_aug(rng, w, h, min_scale=0.5, keep_xy=xy)
    out = aug.apply(image)
    new_xy = aug.forward(xy)[0]
    assert np.abs(new_xy).max() <= 1.0, "the kept point left the crop"
    oh, ow = out.shape[1:]
    new_col = int(np.floor((new_xy[0] + 1) * ow / 2))
    new_row = int(np.floor((new_xy[1] + 1) * oh / 2))
    assert out[0, new_row, new_col] == 1.0
    assert out.sum() == 2.0  # the planted pixel is in the crop exactly once per band
    np.testing.assert_allclose(aug.inverse(aug.forward(xy)), xy, atol=1e-9)


def test_augmentation_is_not_identity() -> None:
    rng = np.random.default_rng(0)
    augs = [transforms.sample_geometry_aug(rng, 64, 64, min_scale=0.6) for _ in range(20)]
    assert any(a.flip_x for a in augs) and any(a.flip_y for a in augs)
    assert any(a.cw < 64 for a in augs)


def test_crop_grows_to_keep_spread_points() -> None:
    rng = np.random.default_rng(1)
    xy = np.array([[-0.99, -0.99], [0.99, 0.99]])
    aug = transforms.sample_geometry_aug(rng, 50, 50, min_scale=0.3, keep_xy=xy)
    assert (np.abs(aug.forward(xy)) <= 1).all()
    assert aug.cw == 50 and aug.ch == 50


def test_resize_keeps_normalized_coordinates() -> None:
    """A pixel-centred blob stays at the same normalized position after resizing (align_corners=False)."""
    image = np.zeros((1, 64, 64), np.float32)
    image[0, 40:48, 8:16] = 1.0
    out = transforms.resize_chw(image, 16)
    assert out.shape == (1, 16, 16) and out.min() >= 0 and out.max() <= 1
    r, c = np.unravel_index(out[0].argmax(), out[0].shape)
    assert (r, c) in {(10, 2), (10, 3), (11, 2), (11, 3)}


def test_normalize_sv_zeroes_padding() -> None:
    sv = torch.full((1, 2, 4, 4, 3), 255, dtype=torch.uint8)
    mask = torch.tensor([[True, False]])
    out = transforms.normalize_sv(sv, mask, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert out.shape == (1, 2, 3, 4, 4)
    assert torch.allclose(out[0, 0], torch.ones(3, 4, 4)) and out[0, 1].abs().sum() == 0
