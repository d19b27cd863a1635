"""CROMA weights (github antofuller/CROMA, ``CROMA_base.pt``) into our RS encoder.

The checkpoint is a dict of state dicts: ``s1_encoder`` (SAR ViT), ``s1_GAP_FFN``,
``s2_encoder`` (optical ViT), ``s2_GAP_FFN`` and ``joint_encoder``. GAIR starts its RS
encoder from the optical part, ``s2_encoder``, whose keys are

    linear_input.{weight,bias}                      patch embedding, (D, 8 * 8 * bands)
    transformer.layers.N.0.to_qkv.weight            attention, no qkv bias
    transformer.layers.N.0.to_out.{weight,bias}
    transformer.layers.N.0.input_norm.{weight,bias}
    transformer.layers.N.1.net.0.{weight,bias}      MLP fc1 (net = Linear, GELU, Dropout, Linear)
    transformer.layers.N.1.net.3.{weight,bias}      MLP fc2
    transformer.layers.N.1.input_norm.{weight,bias}
    transformer.norm_out.{weight,bias}              final LayerNorm on the tokens

CROMA was pretrained on 12 Sentinel-2 bands; GAIR keeps 10, so the band-dependent input
Linear does not fit and is left out (the reference deletes it and keeps the random one).
Every key is reported: placed, left out (with the reason) or missing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from gair.models.rs_encoder import RSEncoder

S2_PART = "s2_encoder"
CROMA_PARTS = ("s1_encoder", "s1_GAP_FFN", "s2_encoder", "s2_GAP_FFN", "joint_encoder")
# Keys that depend on the number of input bands: left out (not an error) when they do not fit.
BAND_DEPENDENT = ("patch_embed.weight", "patch_embed.bias")

_L = r"transformer\.layers\.(\d+)\."
_RULES = [
    (r"linear_input\.(weight|bias)$", r"patch_embed.\1"),
    (_L + r"0\.to_qkv\.weight$", r"blocks.\1.attn.qkv.weight"),
    (_L + r"0\.to_out\.(weight|bias)$", r"blocks.\1.attn.proj.\2"),
    (_L + r"0\.input_norm\.(weight|bias)$", r"blocks.\1.attn.norm.\2"),
    (_L + r"1\.net\.0\.(weight|bias)$", r"blocks.\1.mlp.fc1.\2"),
    (_L + r"1\.net\.3\.(weight|bias)$", r"blocks.\1.mlp.fc2.\2"),
    (_L + r"1\.input_norm\.(weight|bias)$", r"blocks.\1.mlp.norm.\2"),
    (r"transformer\.norm_out\.(weight|bias)$", r"norm.\1"),
]
_COMPILED = [(re.compile(p), t) for p, t in _RULES]


@dataclass
class CromaLoadReport:
    """What happened to every key: ``placed`` (CROMA key -> ours), ``left_out`` (key -> reason), ``missing``."""

    placed: dict[str, str] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # our RS encoder keys nothing filled

    def summary(self) -> str:
        parts = [f"{len(self.placed)} CROMA s2_encoder tensors placed"]
        if self.left_out:
            parts.append(f"left out: {self.left_out}")
        if self.missing:
            parts.append(f"missing (kept at their initial values): {self.missing}")
        return "; ".join(parts)


def croma_s2_state(checkpoint: Mapping) -> Mapping[str, torch.Tensor]:
    """The optical encoder's state dict from a whole CROMA checkpoint (or the part itself)."""
    if S2_PART in checkpoint:
        return checkpoint[S2_PART]
    if any(str(k).startswith("transformer.layers.") for k in checkpoint):
        return checkpoint
    raise KeyError(f"not a CROMA checkpoint: no {S2_PART!r} part among {sorted(map(str, checkpoint))[:8]}")


def load_croma_into_rs_encoder(encoder: RSEncoder, checkpoint: Mapping) -> CromaLoadReport:
    """Copy CROMA's ``s2_encoder`` into ``encoder`` in place and report every key.

    Raises ``KeyError`` when a key our encoder needs (anything but the band-dependent input
    Linear) is not in the checkpoint, and ``ValueError`` on a shape that does not fit one
    (other than that Linear) or on a key that is not part of CROMA's optical encoder.
    """
    source = croma_s2_state(checkpoint)
    ours = encoder.state_dict()
    report = CromaLoadReport()
    updates: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    # The input Linear is one unit: its bias goes with its weight (the reference drops both).
    w_in = source.get("linear_input.weight")
    bands_fit = w_in is None or tuple(w_in.shape) == tuple(ours["patch_embed.weight"].shape)
    for key, tensor in source.items():
        for pattern, template in _COMPILED:
            m = pattern.match(key)
            if m:
                target = m.expand(template)
                break
        else:
            unknown.append(key)
            continue
        if target not in ours:
            # A final norm in the checkpoint but rs_final_norm off in our config.
            report.left_out[key] = f"our encoder has no {target} (model.rs_final_norm is off)"
            continue
        if target in BAND_DEPENDENT and not bands_fit:
            report.left_out[key] = (
                f"band-dependent input Linear: CROMA's weight {tuple(w_in.shape)} does not fit ours "
                f"{tuple(ours['patch_embed.weight'].shape)} ({encoder.in_chans} bands); kept at its initial value"
            )
            continue
        if tuple(ours[target].shape) != tuple(tensor.shape):
            raise ValueError(
                f"CROMA {key} has shape {tuple(tensor.shape)}, our {target} needs {tuple(ours[target].shape)}"
            )
        updates[target] = tensor
        report.placed[key] = target
    if unknown:
        raise ValueError(f"keys not in CROMA's optical encoder layout: {unknown[:8]}")
    report.missing = [k for k in ours if k not in updates]
    required = [k for k in report.missing if k not in BAND_DEPENDENT]
    if required:
        raise KeyError(f"CROMA checkpoint lacks keys our RS encoder needs: {required}")
    with torch.no_grad():
        for target, tensor in updates.items():
            ours[target].copy_(tensor.to(ours[target].dtype))
    return report


def croma_checkpoint_layout(
    dim: int = 768, depth: int = 12, s2_channels: int = 12, s1_channels: int = 2, patch_size: int = 8
) -> dict[str, dict[str, tuple[int, ...]]]:
    """Key names and shapes of a CROMA checkpoint (``CROMA_base.pt`` at the defaults).

    The SAR encoder and the joint encoder have half the depth of the optical one. Used to
    write test files in the exact real layout at tiny sizes.
    """
    hidden = 4 * dim

    def vit(channels: int, layers: int) -> dict[str, tuple[int, ...]]:
        out: dict[str, tuple[int, ...]] = {
            "linear_input.weight": (dim, patch_size * patch_size * channels),
            "linear_input.bias": (dim,),
        }
        for i in range(layers):
            p = f"transformer.layers.{i}."
            out |= {
                p + "0.to_qkv.weight": (3 * dim, dim),
                p + "0.to_out.weight": (dim, dim),
                p + "0.to_out.bias": (dim,),
                p + "0.input_norm.weight": (dim,),
                p + "0.input_norm.bias": (dim,),
                p + "1.net.0.weight": (hidden, dim),
                p + "1.net.0.bias": (hidden,),
                p + "1.net.3.weight": (dim, hidden),
                p + "1.net.3.bias": (dim,),
                p + "1.input_norm.weight": (dim,),
                p + "1.input_norm.bias": (dim,),
            }
        return out | {"transformer.norm_out.weight": (dim,), "transformer.norm_out.bias": (dim,)}

    gap_ffn = {"0.weight": (dim,), "0.bias": (dim,), "1.weight": (hidden, dim), "1.bias": (hidden,)}
    gap_ffn |= {"3.weight": (dim, hidden), "3.bias": (dim,)}
    joint: dict[str, tuple[int, ...]] = {}
    for i in range(depth // 2):
        p = f"layers.{i}."
        joint |= {
            p + "0.to_qkv.weight": (3 * dim, dim),
            p + "0.to_out.weight": (dim, dim),
            p + "0.to_out.bias": (dim,),
            p + "0.input_norm.weight": (dim,),
            p + "0.input_norm.bias": (dim,),
            p + "1.to_q.weight": (dim, dim),
            p + "1.to_k.weight": (dim, dim),
            p + "1.to_v.weight": (dim, dim),
            p + "1.to_out.weight": (dim, dim),
            p + "1.to_out.bias": (dim,),
            p + "1.input_norm.weight": (dim,),
            p + "1.input_norm.bias": (dim,),
            p + "2.net.0.weight": (hidden, dim),
            p + "2.net.0.bias": (hidden,),
            p + "2.net.3.weight": (dim, hidden),
            p + "2.net.3.bias": (dim,),
            p + "2.input_norm.weight": (dim,),
            p + "2.input_norm.bias": (dim,),
        }
    joint |= {"norm_out.weight": (dim,), "norm_out.bias": (dim,)}
    return {
        "s1_encoder": vit(s1_channels, depth // 2),
        "s1_GAP_FFN": dict(gap_ffn),
        "s2_encoder": vit(s2_channels, depth),
        "s2_GAP_FFN": dict(gap_ffn),
        "joint_encoder": joint,
    }
