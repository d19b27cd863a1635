"""Frozen teachers of GAIR's distillation terms (the reference training code always has them).

- SV teacher: a ViT-B/16 pretrained on ImageNet-21k (``google/vit-base-patch16-224-in21k``),
  loaded from a local state dict in Hugging Face ``ViTModel`` layout (transformers 4.x or
  5.x names) or timm's layout; its pooler output is the target of the SV student's.
- RS teacher: a frozen copy of the RS encoder as initialized (from CROMA in the paper);
  its mean token is the target of the student's mean token.

Teachers hold no trainable state: every parameter has ``requires_grad=False``, they run in
eval mode under ``torch.no_grad``, and :class:`~gair.models.pretrain.GAIRPretrainModule`
keeps them out of its registered submodules, so an optimizer, DeepSpeed (ZeRO partitioning
included) and checkpoints never see them. They follow the module's ``.to()``/``.half()``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn

from gair.configs.model import ModelConfig
from gair.models._vit_layouts import convert_vit_state_dict
from gair.models.rs_encoder import RSEncoder
from gair.models.sv_encoder import SVEncoder


def load_sv_teacher(state: Mapping[str, torch.Tensor], cfg: ModelConfig) -> SVEncoder:
    """An SV encoder of ``cfg``'s shape filled from ``state``; every tensor must be filled.

    Raises ``KeyError`` naming the encoder keys ``state`` leaves unfilled or the keys it
    has in no known layout, and ``ValueError`` on a shape that does not fit.
    """
    conv = convert_vit_state_dict(state)
    encoder = SVEncoder(
        image_size=cfg.sv_image_size,
        patch_size=cfg.sv_patch_size,
        dim=cfg.width,
        depth=cfg.depth,
        num_heads=cfg.sv_heads,
    )
    expected = encoder.state_dict()
    if conv.unexpected:
        raise KeyError(f"SV teacher weights: keys in no known ViT layout: {conv.unexpected[:8]}")
    missing = [k for k in expected if k not in conv.state]
    if missing:
        raise KeyError(f"SV teacher weights leave these parameters unfilled: {missing[:8]} ({len(missing)} in all)")
    extra = [k for k in conv.state if k not in expected]
    if extra:
        raise KeyError(f"SV teacher weights have parameters our encoder lacks (deeper model?): {extra[:8]}")
    bad = {k: (tuple(v.shape), tuple(expected[k].shape)) for k, v in conv.state.items() if v.shape != expected[k].shape}
    if bad:
        raise ValueError(f"SV teacher weights do not fit model size {cfg.size!r} (theirs, ours): {bad}")
    encoder.load_state_dict(conv.state, strict=True)
    return freeze(encoder)


def copy_rs_teacher(encoder: RSEncoder) -> RSEncoder:
    """A frozen copy of ``encoder`` as it is now (call it right after initialization)."""
    return freeze(copy.deepcopy(encoder))


def freeze(module: nn.Module) -> nn.Module:
    module.eval().requires_grad_(False)
    return module


class Teachers(nn.Module):
    """The two frozen targets; ``targets(rs, sv)`` -> (RS mean token (B, D), SV pooler (N, D))."""

    def __init__(self, rs: RSEncoder, sv: SVEncoder) -> None:
        super().__init__()
        self.rs = rs
        self.sv = sv
        freeze(self)

    def train(self, mode: bool = True) -> Teachers:
        return super().train(False)  # always eval (no dropout)

    @torch.no_grad()
    def targets(self, rs_BCHW: torch.Tensor, sv_N3VV: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rs(rs_BCHW).mean(dim=1), self.sv(sv_N3VV)
