"""Teacher and CROMA weight files in their real layouts, at the tiny model size (for job tests)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from gair.configs.model import ModelConfig
from gair.models._vit_layouts import hf_vit_state_dict
from gair.models.croma import croma_checkpoint_layout
from gair.models.sv_encoder import SVEncoder


def write_croma(path: Path, cfg: ModelConfig, seed: int = 0) -> Path:
    """``CROMA_base.pt``'s layout (12-band optical input, SAR and joint parts) at ``cfg``'s width and depth."""
    g = torch.Generator().manual_seed(seed)
    layout = croma_checkpoint_layout(dim=cfg.width, depth=cfg.depth)
    ckpt = {p: {k: torch.randn(s, generator=g) * 0.05 for k, s in keys.items()} for p, keys in layout.items()}
    for part in ckpt.values():  # LayerNorm weights near 1, as trained ones are
        for k, v in part.items():
            if "norm" in k and k.endswith("weight"):
                v.add_(1.0)
    torch.save(ckpt, path)
    return path


def write_sv_teacher(path: Path, cfg: ModelConfig, seed: int = 1) -> Path:
    """A ViT in Hugging Face ``ViTModel`` layout with transformers 5.x names, as ``model.safetensors``."""
    torch.manual_seed(seed)
    enc = SVEncoder(cfg.sv_image_size, cfg.sv_patch_size, cfg.width, cfg.depth, cfg.sv_heads)
    save_file({k: v.contiguous() for k, v in hf_vit_state_dict(enc.state_dict(), major=5).items()}, path)
    return path
