import math

import pytest
import torch

from gair.models.rs_encoder import RSEncoder, alibi_2d_bias, alibi_slopes


def test_alibi_slopes_are_the_standard_geometric_sequence():
    s = alibi_slopes(16)
    assert len(s) == 16
    assert s[0] == pytest.approx(2**-0.5)
    assert all(b / a == pytest.approx(2**-0.5) for a, b in zip(s, s[1:]))
    assert alibi_slopes(8)[0] == pytest.approx(0.5)
    assert len(alibi_slopes(12)) == 12  # non power of two: interleaved extension


def test_alibi_bias_is_minus_slope_times_euclidean_cell_distance():
    bias = alibi_2d_bias(4, 3, 3)
    assert bias.shape == (4, 9, 9)
    slopes = alibi_slopes(4)
    # cell 0 = (row 0, col 0), cell 8 = (row 2, col 2): distance 2*sqrt(2)
    assert bias[1, 0, 8].item() == pytest.approx(-slopes[1] * 2 * math.sqrt(2), rel=1e-6)
    assert bias[2, 4, 5].item() == pytest.approx(-slopes[2], rel=1e-6)  # horizontal neighbours
    assert bias[2, 1, 4].item() == pytest.approx(-slopes[2], rel=1e-6)  # vertical neighbours
    assert torch.all(torch.diagonal(bias, dim1=1, dim2=2) == 0)
    assert torch.allclose(bias, bias.transpose(1, 2))


def test_fused_attention_with_bias_matches_explicit_softmax():
    torch.manual_seed(0)
    enc = RSEncoder(in_chans=3, image_size=16, patch_size=4, dim=32, depth=1, num_heads=4)
    attn = enc.blocks[0].attn
    x = torch.randn(2, 16, 32)
    out = attn(x, enc.attn_bias)
    q, k, v = attn.qkv(attn.norm(x)).view(2, 16, 3, 4, 8).permute(2, 0, 3, 1, 4)
    logits = q @ k.transpose(-1, -2) / math.sqrt(8) + enc.attn_bias
    manual = attn.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(2, 16, 32))
    assert torch.allclose(out, manual, atol=1e-5)


def test_patch_order_is_channel_major_inside_row_major_patches():
    enc = RSEncoder(in_chans=2, image_size=4, patch_size=2, dim=8, depth=1, num_heads=2)
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    p = enc.patchify(x)
    assert p.shape == (1, 4, 8)
    # patch 1 = row 0, col 1: pixels (0,2),(0,3),(1,2),(1,3) of band 0, then band 1
    assert p[0, 1].tolist() == [2, 3, 6, 7, 18, 19, 22, 23]


def test_position_enters_only_through_alibi():
    """Without the bias the encoder is permutation-equivariant over tokens; with it, not."""
    torch.manual_seed(0)
    enc = RSEncoder(in_chans=3, image_size=16, patch_size=4, dim=32, depth=2, num_heads=4)
    x = torch.randn(1, 16, 32)
    perm = torch.randperm(16)
    zero = torch.zeros_like(enc.attn_bias)

    def run(tokens, bias):
        for b in enc.blocks:
            tokens = b(tokens, bias)
        return tokens

    assert torch.allclose(run(x, zero)[:, perm], run(x[:, perm], zero), atol=1e-5)
    assert not torch.allclose(run(x, enc.attn_bias)[:, perm], run(x[:, perm], enc.attn_bias), atol=1e-3)


def test_any_band_count_and_input_checks():
    enc = RSEncoder(in_chans=4, image_size=16, patch_size=8, dim=16, depth=1, num_heads=2, final_norm=True)
    assert enc(torch.randn(3, 4, 16, 16)).shape == (3, 4, 16)
    with pytest.raises(ValueError, match="bands"):
        enc(torch.randn(1, 10, 16, 16))
    with pytest.raises(ValueError, match="expects 16x16"):
        enc(torch.randn(1, 4, 24, 24))
    with pytest.raises(ValueError, match="multiple"):
        RSEncoder(image_size=30, patch_size=8)
