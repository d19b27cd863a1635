"""Consolidated fp32 weights from a DeepSpeed checkpoint -> ``gair.hub`` export directory.

Runs anywhere the checkpoint can be read (the driver, after training): it needs DeepSpeed's
offline ``zero_to_fp32`` reader for ZeRO 1-3, plain ``torch.load`` for stage 0, and no
process group. The result loads with ``gair.hub.load_pretrained`` alone.
"""

from __future__ import annotations

from pathlib import Path

import torch

from gair.configs.model import ModelConfig
from gair.hub import save_pretrained
from gair.models.gair import GAIR
from gair.train.checkpoint import read_state

MODEL_PREFIX = "model."  # GAIRPretrainModule keeps the GAIR model as ``.model``


def consolidated_state_dict(checkpoint_dir: str | Path) -> dict[str, torch.Tensor]:
    """The full fp32 state dict of the trained module (all ranks' shards merged)."""
    checkpoint_dir = Path(checkpoint_dir)
    tag = read_state(checkpoint_dir).tag
    tag_dir = checkpoint_dir / tag
    if any(tag_dir.glob("*zero_pp_rank_*optim_states.pt")):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_dir), tag=tag)
    else:  # ZeRO stage 0 in fp32: the module state is complete in the model states file
        files = sorted(tag_dir.glob("mp_rank_*_model_states.pt"))
        if not files:
            raise FileNotFoundError(f"no DeepSpeed model states in {tag_dir}")
        state = torch.load(files[0], map_location="cpu", weights_only=False)["module"]
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def gair_state_dict(module_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep the GAIR model's entries (drop the queue and other objective state)."""
    out = {k[len(MODEL_PREFIX) :]: v for k, v in module_state.items() if k.startswith(MODEL_PREFIX)}
    if not out:
        raise KeyError(f"no {MODEL_PREFIX!r} entries in the checkpoint; keys start {list(module_state)[:5]}")
    return out


def export_checkpoint(
    checkpoint_dir: str | Path, model_cfg: ModelConfig, out_dir: str | Path, extra: dict | None = None
) -> Path:
    """Write ``model.safetensors`` + ``config.json`` for the checkpoint's GAIR model to ``out_dir``."""
    model = GAIR(model_cfg)
    model.load_state_dict(gair_state_dict(consolidated_state_dict(checkpoint_dir)), strict=True)
    return save_pretrained(model, out_dir, extra=extra)
