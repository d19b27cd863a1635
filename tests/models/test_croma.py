"""CROMA's optical encoder into our RS encoder, from files in the real ``CROMA_base.pt`` layout."""

from __future__ import annotations

import pytest
import torch

from gair.models.croma import croma_checkpoint_layout, load_croma_into_rs_encoder
from gair.models.rs_encoder import RSEncoder
from tests.models._factory import tiny_model


def write_croma(path, dim=64, depth=2, s2_channels=12, seed=0):
    """A CROMA checkpoint with every real key name, at a tiny width and depth."""
    g = torch.Generator().manual_seed(seed)
    layout = croma_checkpoint_layout(dim=dim, depth=depth, s2_channels=s2_channels)
    ckpt = {
        part: {k: torch.randn(shape, generator=g) * 0.05 for k, shape in keys.items()} for part, keys in layout.items()
    }
    torch.save(ckpt, path)
    return ckpt


def test_base_layout_matches_the_real_file():
    """CROMA_base.pt: 12-band optical ViT of 12 blocks, SAR and joint encoders of 6."""
    layout = croma_checkpoint_layout()
    s2 = layout["s2_encoder"]
    assert s2["linear_input.weight"] == (768, 768)  # 8 x 8 x 12 bands
    assert len([k for k in s2 if k.endswith("0.to_qkv.weight")]) == 12
    assert len([k for k in layout["s1_encoder"] if k.endswith("0.to_qkv.weight")]) == 6
    assert layout["s1_encoder"]["linear_input.weight"] == (768, 128)
    assert set(layout) == {"s1_encoder", "s1_GAP_FFN", "s2_encoder", "s2_GAP_FFN", "joint_encoder"}


def test_loads_every_block_and_leaves_out_the_12_band_input(tmp_path):
    ckpt = write_croma(tmp_path / "CROMA_base.pt")
    model = tiny_model(rs_final_norm=True)  # 10 bands
    before = model.rs_encoder.patch_embed.weight.clone()
    report = load_croma_into_rs_encoder(model.rs_encoder, torch.load(tmp_path / "CROMA_base.pt"))
    s2 = ckpt["s2_encoder"]
    assert set(report.left_out) == {"linear_input.weight", "linear_input.bias"}
    assert report.missing == ["patch_embed.weight", "patch_embed.bias"]
    assert len(report.placed) == len(s2) - 2
    torch.testing.assert_close(model.rs_encoder.blocks[1].attn.qkv.weight, s2["transformer.layers.1.0.to_qkv.weight"])
    torch.testing.assert_close(model.rs_encoder.blocks[0].mlp.fc2.bias, s2["transformer.layers.0.1.net.3.bias"])
    torch.testing.assert_close(model.rs_encoder.norm.weight, s2["transformer.norm_out.weight"])
    assert torch.equal(model.rs_encoder.patch_embed.weight, before)


def test_same_band_count_places_the_input_linear(tmp_path):
    ckpt = write_croma(tmp_path / "c.pt", s2_channels=10)
    enc = RSEncoder(in_chans=10, image_size=32, dim=64, depth=2, num_heads=4, final_norm=True)
    report = load_croma_into_rs_encoder(enc, ckpt)
    assert not report.left_out and not report.missing
    torch.testing.assert_close(enc.patch_embed.weight, ckpt["s2_encoder"]["linear_input.weight"])


def test_matches_the_croma_forward(tmp_path):
    """Our encoder on CROMA weights computes CROMA's tokens (pre-norm blocks, 2D-ALiBi, norm_out)."""
    ckpt = write_croma(tmp_path / "c.pt", s2_channels=10)
    enc = RSEncoder(in_chans=10, image_size=32, dim=64, depth=2, num_heads=4, final_norm=True)
    load_croma_into_rs_encoder(enc, ckpt)
    s2 = ckpt["s2_encoder"]
    x = torch.rand(2, 10, 32, 32)
    # CROMA's computation written out from its key layout: Linear patch embedding, then
    # x += to_out(attn(input_norm(x))) and x += net(input_norm(x)), then norm_out.
    tok = x.reshape(2, 10, 4, 8, 4, 8).permute(0, 2, 4, 1, 3, 5).reshape(2, 16, 640)
    h = tok @ s2["linear_input.weight"].T + s2["linear_input.bias"]
    ln = lambda t, p: torch.nn.functional.layer_norm(t, (64,), s2[p + ".weight"], s2[p + ".bias"])  # noqa: E731
    for i in range(2):
        p = f"transformer.layers.{i}."
        q, k, v = (ln(h, p + "0.input_norm") @ s2[p + "0.to_qkv.weight"].T).chunk(3, -1)
        q, k, v = (t.view(2, 16, 4, 16).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-1, -2) * 16**-0.5 + enc.attn_bias).softmax(-1)
        o = (att @ v).transpose(1, 2).reshape(2, 16, 64)
        h = h + o @ s2[p + "0.to_out.weight"].T + s2[p + "0.to_out.bias"]
        f = torch.nn.functional.gelu(ln(h, p + "1.input_norm") @ s2[p + "1.net.0.weight"].T + s2[p + "1.net.0.bias"])
        h = h + f @ s2[p + "1.net.3.weight"].T + s2[p + "1.net.3.bias"]
    expected = ln(h, "transformer.norm_out")
    torch.testing.assert_close(enc(x), expected, atol=1e-5, rtol=1e-5)


def test_missing_required_key_is_an_error(tmp_path):
    ckpt = write_croma(tmp_path / "c.pt")
    del ckpt["s2_encoder"]["transformer.layers.1.1.net.0.weight"]
    with pytest.raises(KeyError, match=r"blocks\.1\.mlp\.fc1\.weight"):
        load_croma_into_rs_encoder(tiny_model(rs_final_norm=True).rs_encoder, ckpt)


def test_wrong_width_and_foreign_keys_are_errors(tmp_path):
    with pytest.raises(ValueError, match="shape"):
        load_croma_into_rs_encoder(tiny_model().rs_encoder, write_croma(tmp_path / "c.pt", dim=32))
    with pytest.raises(KeyError, match="not a CROMA checkpoint"):
        load_croma_into_rs_encoder(tiny_model().rs_encoder, {"model": {}})


def test_final_norm_off_reports_norm_out_left_out(tmp_path):
    report = load_croma_into_rs_encoder(tiny_model(rs_final_norm=False).rs_encoder, write_croma(tmp_path / "c.pt"))
    assert "transformer.norm_out.weight" in report.left_out
