import pytest
import torch

from gair.models.nili import NILI, cell_centres, interpolate_tokens, nearest_cell


@pytest.fixture
def nili_and_tokens():
    torch.manual_seed(0)
    nili = NILI(dim=8)
    tokens = torch.randn(3, 6 * 6, 8)
    return nili, tokens


@pytest.mark.parametrize("K", [3, 17], ids=["gather-path", "conv-path"])  # 4K < N=36 and 4K >= N
def test_vectorized_matches_looped_single_query(nili_and_tokens, K):
    nili, tokens = nili_and_tokens
    xy = torch.rand(3, K, 2) * 2 - 1
    xy[0, 0] = torch.tensor([-1.0, 1.0])  # corners and exact cell borders
    xy[0, 1] = torch.tensor([0.0, 0.0])
    xy[1, 2] = torch.tensor([1 / 3, -1 / 3])
    fast = nili(tokens, xy, (6, 6))
    slow = torch.stack([nili.forward_single(tokens, xy[:, k], (6, 6)) for k in range(K)], dim=1)
    assert fast.shape == (3, K, 8)
    assert torch.allclose(fast, slow, atol=1e-5)


def test_vectorized_matches_looped_on_non_square_grid():
    torch.manual_seed(1)
    nili = NILI(dim=4)
    tokens = torch.randn(2, 4 * 7, 4)
    xy = torch.rand(2, 9, 2) * 2 - 1
    fast = nili(tokens, xy, (4, 7))
    slow = torch.stack([nili.forward_single(tokens, xy[:, k], (4, 7)) for k in range(9)], dim=1)
    assert torch.allclose(fast, slow, atol=1e-5)


@pytest.mark.parametrize("K", [5, 12])
def test_gradients_match_the_looped_path(nili_and_tokens, K):
    nili, tokens = nili_and_tokens
    tokens = tokens.clone().requires_grad_(True)
    xy = torch.rand(3, K, 2) * 2 - 1
    nili(tokens, xy, (6, 6)).square().sum().backward()
    g_fast, w_fast = tokens.grad.clone(), nili.weight.grad.clone()
    tokens.grad = None
    nili.zero_grad()
    torch.stack([nili.forward_single(tokens, xy[:, k], (6, 6)) for k in range(K)], 1).square().sum().backward()
    assert torch.allclose(g_fast, tokens.grad, atol=1e-4)
    assert torch.allclose(w_fast, nili.weight.grad, atol=1e-4)


def test_continuous_across_cell_borders(nili_and_tokens):
    """The area blend makes NILI continuous where nearest-cell lookups jump."""
    nili, tokens = nili_and_tokens
    border = -1 + 2 * 2 / 6  # the border between cells 1 and 2 along x
    eps = 1e-4
    for y in (-0.7, 0.1, 0.55):
        xy = torch.tensor([[[border - eps, y], [border + eps, y]]]).repeat(3, 1, 1)
        out = nili(tokens, xy, (6, 6))
        jump = (out[:, 0] - out[:, 1]).abs().max().item()
        assert jump < 1e-2, f"jump {jump} at the cell border (y={y})"
    # Across a much larger step the features do change: the test above is not vacuous.
    far = nili(tokens, torch.tensor([[[-0.9, 0.0], [0.9, 0.0]]]).repeat(3, 1, 1), (6, 6))
    assert (far[:, 0] - far[:, 1]).abs().max().item() > 1e-2


def test_at_a_cell_centre_only_that_cell_matters(nili_and_tokens):
    """At a centre q, changing a token outside every 3x3 neighbourhood of the four cells is a no-op."""
    nili, tokens = nili_and_tokens
    c = cell_centres(6)
    xy = torch.tensor([[[c[1].item(), c[1].item()]]]).repeat(3, 1, 1)
    base = nili(tokens, xy, (6, 6))
    changed = tokens.clone()
    changed[:, 5 * 6 + 5] += 10.0  # far corner cell
    assert torch.allclose(base, nili(changed, xy, (6, 6)), atol=1e-6)
    changed = tokens.clone()
    changed[:, 1 * 6 + 1] += 10.0  # the cell itself
    assert not torch.allclose(base, nili(changed, xy, (6, 6)), atol=1e-3)


def test_nearest_cell_rounds_like_grid_sample():
    n = 12
    coords = torch.linspace(-0.999, 0.999, 1001)
    feat = torch.arange(n, dtype=torch.float32).view(1, 1, 1, n)
    grid = torch.stack([coords, torch.zeros_like(coords)], -1).view(1, 1, -1, 2)
    expected = torch.nn.functional.grid_sample(feat, grid, mode="nearest", align_corners=False).flatten().long()
    assert torch.equal(nearest_cell(coords, n), expected)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_interpolation_baselines(mode):
    torch.manual_seed(0)
    tokens = torch.randn(2, 16, 5)
    c = cell_centres(4)
    # At a cell centre bilinear sampling returns that token exactly.
    xy = torch.tensor([[[c[2].item(), c[1].item()]]]).repeat(2, 1, 1)
    out = interpolate_tokens(tokens, xy, (4, 4), mode)
    assert out.shape == (2, 1, 5)
    if mode == "bilinear":
        assert torch.allclose(out[:, 0], tokens[:, 1 * 4 + 2], atol=1e-6)
    with pytest.raises(ValueError, match="bilinear or bicubic"):
        interpolate_tokens(tokens, xy, (4, 4), "nearest")
