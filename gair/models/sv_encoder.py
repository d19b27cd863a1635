"""Street-view encoder: a ViT-B/16-style image encoder (timm) with a CLS -> tanh pooler.

The reference uses Hugging Face's ``ViTModel``: pre-norm blocks, LayerNorm eps 1e-12, a
final LayerNorm, and ``pooler_output = tanh(Linear(CLS))``. timm's VisionTransformer has
the same computation; :mod:`gair.models._reference` maps the weights.
"""

from __future__ import annotations

from functools import partial

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn


class SVEncoder(nn.Module):
    """(B, 3, V, V) -> pooled embedding (B, D)."""

    def __init__(
        self,
        image_size: int = 224,
        patch_size: int = 16,
        dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.image_size = image_size
        # Built before the ViT (registered after it): see gair.models.gair on the build order.
        pooler = nn.Linear(dim, dim)
        self.vit = VisionTransformer(
            img_size=image_size,
            patch_size=patch_size,
            in_chans=3,
            num_classes=0,
            global_pool="token",
            embed_dim=dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=True,
            class_token=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-12),
            act_layer=nn.GELU,
            pos_drop_rate=dropout,
            proj_drop_rate=dropout,
            attn_drop_rate=dropout,
        )
        self.pooler = pooler

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each ViT block in the backward pass (timm's own switch)."""
        self.vit.set_grad_checkpointing(enable)

    def forward(self, x_B3VV: torch.Tensor) -> torch.Tensor:
        if x_B3VV.shape[-1] != self.image_size or x_B3VV.shape[-2] != self.image_size:
            raise ValueError(f"street view is {tuple(x_B3VV.shape[-2:])}, the encoder expects {self.image_size}")
        tokens_BLD = self.vit.forward_features(x_B3VV)  # final LayerNorm applied
        return torch.tanh(self.pooler(tokens_BLD[:, 0]))
