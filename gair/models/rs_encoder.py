"""Overhead remote-sensing encoder: a CROMA-style multispectral ViT with 2D-ALiBi.

Shape legend: B batch, C bands, H/W pixels, N tokens (= grid_h * grid_w), D width,
h heads, P flattened patch (C * patch * patch).

No CLS token and no absolute position embedding: position enters only through the
2D-ALiBi bias added to the attention logits, ``-slope_h * ||cell_i - cell_j||``.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


def alibi_slopes(num_heads: int) -> list[float]:
    """The standard ALiBi head slopes (Press et al.), extended to non-powers of two."""

    def power_of_2(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(num_heads).is_integer():
        return power_of_2(num_heads)
    closest = 2 ** math.floor(math.log2(num_heads))
    return power_of_2(closest) + alibi_slopes(2 * closest)[0::2][: num_heads - closest]


def alibi_2d_bias(num_heads: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """(h, N, N) additive attention bias: minus slope times the Euclidean cell distance.

    Cells are numbered row-major, matching the patch order of :class:`RSEncoder`.
    """
    cells = torch.tensor(list(itertools.product(range(grid_h), range(grid_w))), dtype=torch.float64)  # (N, 2)
    dist_NN = torch.cdist(cells, cells)  # (N, N)
    slopes_h = torch.tensor(alibi_slopes(num_heads), dtype=torch.float64)
    return (-slopes_h[:, None, None] * dist_NN[None]).float()


class Attention(nn.Module):
    """Pre-norm multi-head self-attention with an additive bias, qkv without bias."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x_BND: torch.Tensor, bias_hNN: torch.Tensor) -> torch.Tensor:
        B, N, D = x_BND.shape
        qkv = self.qkv(self.norm(x_BND)).view(B, N, 3, self.num_heads, D // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, h, N, D/h)
        # Fused attention; the ALiBi bias rides in as an additive float mask (h, N, N),
        # broadcast over B. A float mask rules out the flash kernel; on CUDA the
        # memory-efficient (or cuDNN) kernel takes it, on CPU the fused flash-CPU kernel.
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias_hNN.to(q.dtype))
        return self.proj(out.transpose(1, 2).reshape(B, N, D))


class MLP(nn.Module):
    """Pre-norm feed-forward block with GELU."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.attn = Attention(dim, num_heads)
        self.mlp = MLP(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x, bias)
        return x + self.mlp(x)


class RSEncoder(nn.Module):
    """CROMA-style optical encoder: (B, C, H, W) -> tokens (B, N, D)."""

    def __init__(
        self,
        in_chans: int = 10,
        image_size: int = 96,
        patch_size: int = 8,
        dim: int = 768,
        depth: int = 12,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        final_norm: bool = False,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} must be a multiple of patch_size {patch_size}")
        self.in_chans = in_chans
        self.image_size = image_size
        self.patch_size = patch_size
        self.grid_size = image_size // patch_size
        self.dim = dim
        # A Linear over each flattened (C, p, p) patch, as in CROMA.
        self.patch_embed = nn.Linear(in_chans * patch_size * patch_size, dim)
        self.blocks = nn.ModuleList([Block(dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim) if final_norm else nn.Identity()
        # Not persistent: derived from the geometry, so never stale in a checkpoint.
        self.register_buffer("attn_bias", alibi_2d_bias(num_heads, self.grid_size, self.grid_size), persistent=False)
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of keeping its activations."""
        self.grad_checkpointing = enable

    @property
    def num_patches(self) -> int:
        return self.grid_size * self.grid_size

    def patchify(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, P) with P ordered (C, i, j) and N row-major."""
        B, C, H, W = x_BCHW.shape
        p = self.patch_size
        if self.in_chans != C:
            raise ValueError(f"RS input has {C} bands, the encoder expects {self.in_chans}")
        if self.image_size != H or self.image_size != W:
            raise ValueError(f"RS input is {H}x{W}, the encoder expects {self.image_size}x{self.image_size}")
        x = x_BCHW.reshape(B, C, H // p, p, W // p, p)
        return x.permute(0, 2, 4, 1, 3, 5).reshape(B, (H // p) * (W // p), C * p * p)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        x_BND = self.patch_embed(self.patchify(x_BCHW))
        bias = self.attn_bias.to(x_BND.dtype)  # once, not per block (bf16 under autocast)
        for block in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x_BND = checkpoint(block, x_BND, bias, use_reentrant=False)
            else:
                x_BND = block(x_BND, bias)
        return self.norm(x_BND)
