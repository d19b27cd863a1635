import numpy as np
import pytest
import torch
from affine import Affine

from gair import lonlat_to_xy
from gair.configs.model import ModelConfig
from gair.models.gair import GAIR
from tests.models._factory import random_lonlat, tiny_model


def test_public_api_shapes():
    m = tiny_model()
    B, K, D = 3, 5, m.embed_dim
    rs, sv = torch.randn(B, 10, 32, 32), torch.randn(B, 3, 32, 32)
    assert m.encode_rs(rs).shape == (B, D)
    assert m.encode_sv(sv).shape == (B, D)
    assert m.project_sv(m.encode_sv(sv)).shape == (B, D)
    assert m.encode_location(random_lonlat(B)).shape == (B, D)
    xy = torch.rand(B, K, 2) * 2 - 1
    for mode in ("nili", "bilinear", "bicubic"):
        out = m.query_rs(rs, xy, mode=mode)
        assert out.shape == (B, K, D) and out.dtype == torch.float32
    with pytest.raises(ValueError, match="unknown query mode"):
        m.query_rs(rs, xy, mode="nearest")
    with pytest.raises(ValueError, match=r"\(B, K, 2\)"):
        m.query_rs(rs, xy[:, 0])


def test_encode_rs_is_mean_of_tokens_and_sv_pooler_is_bounded():
    m = tiny_model()
    rs = torch.randn(2, 10, 32, 32)
    assert torch.allclose(m.encode_rs(rs), m.rs_tokens(rs).mean(1))
    assert m.encode_sv(torch.randn(2, 3, 32, 32)).abs().max() <= 1.0  # tanh pooler


def test_gradients_reach_every_trainable_parameter():
    m = tiny_model()
    rs, sv = torch.randn(2, 10, 32, 32), torch.randn(2, 3, 32, 32)
    xy = torch.rand(2, 4, 2) * 2 - 1
    loss = m.query_rs(rs, xy).sum() + m.project_sv(m.encode_sv(sv)).sum() + m.encode_location(random_lonlat(2)).sum()
    loss.backward()
    no_grad = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert no_grad == []


@pytest.mark.parametrize("size,width,params_m", [("base", 768, (180, 200))])
def test_base_size_matches_the_paper_shapes(size, width, params_m):
    with torch.device("meta"):
        m = GAIR(ModelConfig(size=size))
    assert m.embed_dim == width and m.rs_grid == (12, 12)
    assert m.rs_encoder.patch_embed.in_features == 8 * 8 * 10
    n = sum(p.numel() for p in m.parameters()) / 1e6
    assert params_m[0] < n < params_m[1]


def test_band_count_is_configurable():
    m = tiny_model(rs_bands=("B4", "B3", "B2"))
    assert m.encode_rs(torch.randn(1, 3, 32, 32)).shape == (1, m.embed_dim)


def test_lonlat_to_xy_wgs84_and_utm_agree_with_the_affine():
    # A 100x50 px tile in EPSG:4326 from lon 10..11, lat 45..44.5
    t = Affine(0.01, 0, 10.0, 0, -0.01, 45.0)
    xy = lonlat_to_xy(np.array([[10.0, 45.0], [11.0, 44.5], [10.5, 44.75]]), "EPSG:4326", t, 100, 50)
    assert np.allclose(xy, [[-1, -1], [1, 1], [0, 0]])
    # UTM zone 32N tile, 10 m pixels, centred on a known point
    from rasterio.warp import transform

    xs, ys = transform("EPSG:4326", "EPSG:32632", [9.19], [45.46])
    t_utm = Affine(10, 0, xs[0] - 1280, 0, -10, ys[0] + 1280)
    centre = lonlat_to_xy(np.array([[9.19, 45.46]]), "EPSG:32632", t_utm, 256, 256)
    assert np.allclose(centre, [[0.0, 0.0]], atol=1e-9)
    east = lonlat_to_xy(np.array([[9.20, 45.46]]), "EPSG:32632", t_utm, 256, 256)
    assert east[0, 0] > 0 and abs(east[0, 1]) < 0.05  # x to the right


def test_lonlat_to_xy_rejects_bad_coordinates():
    with pytest.raises(ValueError, match="lon in"):
        lonlat_to_xy(np.array([[200.0, 0.0]]), "EPSG:4326", Affine(0.01, 0, 0, 0, -0.01, 0), 10, 10)
