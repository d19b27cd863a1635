import math

import pytest
import torch

from gair.models.location_encoder import LocationEncoder, equal_earth


def test_equal_earth_known_points():
    xy = equal_earth(torch.tensor([[0.0, 0.0], [180.0, 0.0], [0.0, 90.0], [-90.0, 45.0]]))
    assert xy[0].tolist() == [0.0, 0.0]
    # At the equator x = 2*sqrt(3)*pi / (3*A1) for lon = 180, scaled by SF/180.
    assert xy[1, 0].item() == pytest.approx(2 * math.sqrt(3) * math.pi / (3 * 1.340264) * 66.50336 / 180, rel=1e-5)
    assert xy[2, 0].item() == pytest.approx(0.0, abs=1e-6) and xy[2, 1].item() > 0
    assert xy[3, 0].item() < 0 and xy[3, 1].item() > 0  # west and north


def test_lonlat_order_matters():
    enc = LocationEncoder(out_dim=16, hidden=32, num_features=8)
    a = enc(torch.tensor([[10.0, 50.0]]))
    b = enc(torch.tensor([[50.0, 10.0]]))
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("bad", [[181.0, 0.0], [0.0, 91.0], [float("nan"), 0.0], [0.0, float("inf")], [-180.5, -10.0]])
def test_out_of_range_raises_clear_error(bad):
    enc = LocationEncoder(out_dim=16, hidden=32, num_features=8)
    with pytest.raises(ValueError, match=r"\(lon, lat\)"):
        enc(torch.tensor([[0.0, 0.0], bad]))


def test_wrong_shape_raises():
    enc = LocationEncoder(out_dim=16, hidden=32, num_features=8)
    with pytest.raises(ValueError, match="shape"):
        enc(torch.zeros(4, 3))


def test_frequencies_are_saved_fixed_and_scaled_by_sigma():
    enc = LocationEncoder(out_dim=16, sigmas=(1.0, 16.0, 256.0), hidden=32, num_features=256)
    state = enc.state_dict()
    assert "branches.0.freqs" in state and "branches.2.freqs" in state
    assert not any(n.endswith("freqs") for n, _ in enc.named_parameters())
    stds = [b.freqs.std().item() for b in enc.branches]
    assert stds[0] == pytest.approx(1.0, rel=0.15) and stds[1] == pytest.approx(16.0, rel=0.15)
    assert stds[2] == pytest.approx(256.0, rel=0.15)


def test_output_is_sum_of_branches_and_differentiable():
    enc = LocationEncoder(out_dim=16, sigmas=(1.0, 4.0), hidden=32, num_features=8)
    ll = torch.tensor([[12.5, 41.9], [-74.0, 40.7]])
    v = equal_earth(ll)
    assert torch.allclose(enc(ll), enc.branches[0](v) + enc.branches[1](v), atol=1e-6)
    enc(ll).sum().backward()
    assert all(p.grad is not None for p in enc.parameters())


def test_phases_stay_float32_under_bf16_autocast():
    enc = LocationEncoder(out_dim=16, hidden=32, num_features=64)
    ll = torch.tensor([[12.5, 41.9], [12.5001, 41.9]])
    ref = enc(ll)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = enc(ll)
    # High-frequency branch: bf16 phases would be garbage; fp32 phases keep the result close.
    assert torch.allclose(out.float(), ref, atol=0.05, rtol=0.05)
