"""The composed GAIR model: RS, street-view and location encoders in one space, plus NILI.

Public API (batch-first, float32 unless told):
- ``encode_rs(rs)``: (B, C, H, W) -> (B, D), mean of the RS tokens
- ``encode_sv(sv)``: (B, 3, V, V) -> (B, D), pooler output before projection
- ``project_sv(emb)``: (B, D) -> (B, D), the projection applied before the losses
- ``encode_location(lonlat)``: (B, 2) (lon, lat) degrees -> (B, D)
- ``query_rs(rs, xy, mode="nili")``: (B, C, H, W), (B, K, 2) -> (B, K, D)
"""

from __future__ import annotations

import torch
from torch import nn

from gair.configs.model import ModelConfig, QueryMode
from gair.models.location_encoder import LocationEncoder
from gair.models.nili import NILI, interpolate_tokens
from gair.models.rs_encoder import RSEncoder
from gair.models.sv_encoder import SVEncoder

QUERY_MODES = ("nili", "bilinear", "bicubic")


class GAIR(nn.Module):
    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or ModelConfig()
        cfg.validate()
        self.cfg = cfg
        D = cfg.width
        rs_encoder = RSEncoder(
            in_chans=len(cfg.rs_bands),
            image_size=cfg.rs_image_size,
            patch_size=cfg.rs_patch_size,
            dim=D,
            depth=cfg.depth,
            num_heads=cfg.rs_heads,
            final_norm=cfg.rs_final_norm,
        )
        sv_proj = nn.Linear(D, D)
        location_encoder = LocationEncoder(
            out_dim=D,
            sigmas=tuple(cfg.location_sigmas),
            num_features=cfg.location_rff_features,
            hidden=cfg.location_hidden,
        )
        nili = NILI(D)
        # Built last: timm initialises the ViT's layers at the end of its __init__, which
        # under deepspeed.zero.Init must be rerun once the parameters exist (see
        # gair.distributed.zero.rerun_deferred_inits); last, it draws the same random numbers
        # either way and nothing built after it depends on how many it drew.
        sv_encoder = SVEncoder(
            image_size=cfg.sv_image_size,
            patch_size=cfg.sv_patch_size,
            dim=D,
            depth=cfg.depth,
            num_heads=cfg.sv_heads,
            dropout=cfg.dropout,
        )
        self.rs_encoder = rs_encoder
        self.sv_encoder = sv_encoder
        self.sv_proj = sv_proj
        self.location_encoder = location_encoder
        self.nili = nili

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing of the RS and street-view encoder blocks."""
        self.rs_encoder.set_grad_checkpointing(enable)
        self.sv_encoder.set_grad_checkpointing(enable)

    def compile_encoders(self, **compile_kwargs) -> None:
        """``torch.compile`` the RS and street-view encoders in place (state-dict keys unchanged)."""
        self.rs_encoder.compile(**compile_kwargs)
        self.sv_encoder.compile(**compile_kwargs)

    @property
    def embed_dim(self) -> int:
        return self.cfg.width

    @property
    def rs_grid(self) -> tuple[int, int]:
        g = self.rs_encoder.grid_size
        return (g, g)

    def rs_tokens(self, rs_BCHW: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, D) RS tokens, row-major over the patch grid."""
        return self.rs_encoder(rs_BCHW)

    def encode_rs(self, rs_BCHW: torch.Tensor) -> torch.Tensor:
        return self.rs_tokens(rs_BCHW).mean(dim=1)

    def encode_sv(self, sv_B3VV: torch.Tensor) -> torch.Tensor:
        return self.sv_encoder(sv_B3VV)

    def project_sv(self, sv_emb_BD: torch.Tensor) -> torch.Tensor:
        return self.sv_proj(sv_emb_BD)

    def encode_location(self, lonlat_B2: torch.Tensor, check: bool = True) -> torch.Tensor:
        return self.location_encoder(lonlat_B2, check=check)

    def query_tokens(
        self, tokens_BND: torch.Tensor, xy_BK2: torch.Tensor, mode: QueryMode | None = None
    ) -> torch.Tensor:
        """Local features at K points from already computed RS tokens: (B, K, D)."""
        mode = mode or self.cfg.query_mode
        if xy_BK2.ndim != 3 or xy_BK2.shape[-1] != 2:
            raise ValueError(f"xy must have shape (B, K, 2), got {tuple(xy_BK2.shape)}")
        if mode == "nili":
            return self.nili(tokens_BND, xy_BK2, self.rs_grid)
        if mode in ("bilinear", "bicubic"):
            return interpolate_tokens(tokens_BND, xy_BK2, self.rs_grid, mode)
        raise ValueError(f"unknown query mode {mode!r}; expected one of {QUERY_MODES}")

    def query_rs(self, rs_BCHW: torch.Tensor, xy_BK2: torch.Tensor, mode: QueryMode | None = "nili") -> torch.Tensor:
        return self.query_tokens(self.rs_tokens(rs_BCHW), xy_BK2, mode)

    def forward(self, rs_BCHW: torch.Tensor, xy_BK2: torch.Tensor) -> torch.Tensor:
        return self.query_rs(rs_BCHW, xy_BK2)


def build_model(cfg: ModelConfig | None = None) -> GAIR:
    """Build a randomly initialised GAIR model from its config."""
    return GAIR(cfg or ModelConfig())
