"""Model and objective configuration (sizes, encoders, NILI, losses)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gair.configs.base import field
from gair.sensors import S2_BANDS_10

QueryMode = Literal["nili", "bilinear", "bicubic"]

# name -> (width, depth, rs_heads, sv_heads, location hidden width)
SIZES: dict[str, tuple[int, int, int, int, int]] = {
    "tiny": (64, 2, 4, 4, 128),
    "small": (384, 12, 8, 6, 512),
    "base": (768, 12, 16, 12, 1024),
    "large": (1024, 24, 16, 16, 1024),
}


@dataclass
class ModelConfig:
    size: Literal["tiny", "small", "base", "large"] = field(
        "base", help="Model size preset: tiny (CPU tests), small, base (the paper), large."
    )
    rs_bands: tuple[str, ...] = field(S2_BANDS_10, help="Names of the RS input bands, in channel order.")
    rs_image_size: int = field(96, help="RS input size in pixels (square); a multiple of rs_patch_size.")
    rs_patch_size: int = field(8, help="RS patch size; 96/8 gives the paper's 12x12 token grid.")
    rs_final_norm: bool = field(
        False,
        help="Final LayerNorm on the RS tokens (the reference training code has it; its released "
        "inference code and weights do not).",
    )
    sv_image_size: int = field(224, help="Street-view input size in pixels (square).")
    sv_patch_size: int = field(16, help="Street-view ViT patch size.")
    location_sigmas: tuple[float, ...] = field(
        (1.0, 16.0, 256.0), help="Random-Fourier-feature scales of the location encoder branches."
    )
    location_rff_features: int = field(256, help="Number of random Fourier frequencies per branch.")
    query_mode: QueryMode = field("nili", help="How RS features are read at a point: nili, bilinear or bicubic.")
    dropout: float = field(0.0, help="Dropout in the street-view encoder (the reference uses 0.1 when training).")
    rs_init: str = field(
        "",
        help="CROMA checkpoint (CROMA_base.pt layout; local path, s3:// or gs:// URI) whose optical s2_encoder "
        "initializes the RS encoder; every key is reported placed, left out (the band-dependent input Linear "
        "when the band count differs) or missing, and a missing required key is an error. Empty: random init.",
    )
    sv_teacher: str = field(
        "",
        help="Weights of the frozen street-view teacher of the distillation (the paper: "
        "google/vit-base-patch16-224-in21k), a local file or directory (model.safetensors or pytorch_model.bin) "
        "or an s3:// or gs:// file URI, in Hugging Face ViTModel layout (transformers 4.x or 5.x names) or timm's. "
        "Needed when loss.distill_weight > 0.",
    )

    def validate(self) -> None:
        if self.rs_image_size % self.rs_patch_size:
            raise ValueError(
                f"rs_image_size {self.rs_image_size} is not a multiple of rs_patch_size {self.rs_patch_size}"
            )
        if self.sv_image_size % self.sv_patch_size:
            raise ValueError(
                f"sv_image_size {self.sv_image_size} is not a multiple of sv_patch_size {self.sv_patch_size}"
            )
        if not self.rs_bands:
            raise ValueError("rs_bands must name at least one band")
        if not self.location_sigmas:
            raise ValueError("location_sigmas must hold at least one scale")

    @property
    def width(self) -> int:
        return SIZES[self.size][0]

    @property
    def depth(self) -> int:
        return SIZES[self.size][1]

    @property
    def rs_heads(self) -> int:
        return SIZES[self.size][2]

    @property
    def sv_heads(self) -> int:
        return SIZES[self.size][3]

    @property
    def location_hidden(self) -> int:
        return SIZES[self.size][4]

    @property
    def rs_grid(self) -> int:
        return self.rs_image_size // self.rs_patch_size


@dataclass
class LossConfig:
    temperature: float = field(0.07, help="Initial contrastive temperature tau (logits = cos / tau).")
    learnable_temperature: bool = field(False, help="Learn the logit scale (CLIP style) instead of fixing tau.")
    max_logit_scale: float = field(100.0, help="Clamp of the learnable logit scale 1/tau, as in CLIP.")
    queue_size: int = field(4096, help="Length of the FIFO queue of past (lon, lat) used as SECL negatives.")
    gather_negatives: bool = field(
        True, help="Gather embeddings from all workers (with gradient) so negatives span the global batch."
    )
    incl_weight: float = field(1.0, help="Weight of INCL (street view <-> NILI feature, both directions).")
    secl_weight: float = field(1.0, help="Weight of SECL (street view and NILI feature <-> location, queue negatives).")
    extra_points_weight: float = field(
        1.0, help="Weight of SECL on the extra random query points (NILI feature <-> their location)."
    )
    distill_weight: float = field(
        0.0,
        help="Weight w of the distillation: loss += -w cos(SV pooler, frozen SV teacher's pooler) - w cos(mean RS "
        "tokens, mean tokens of a frozen copy of the initialized RS encoder). 0 = off; the reference: 0.2, "
        "always on. Needs model.sv_teacher.",
    )

    def validate(self) -> None:
        if not 0 < self.temperature < 10:
            raise ValueError(f"temperature must be in (0, 10), got {self.temperature}")
        if self.queue_size < 0:
            raise ValueError("queue_size must be >= 0")
        if self.max_logit_scale <= 0:
            raise ValueError("max_logit_scale must be > 0")
        if self.distill_weight < 0:
            raise ValueError("distill_weight must be >= 0")
