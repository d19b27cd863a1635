"""Our own weights format: ``model.safetensors`` + ``config.json`` in a directory.

Loadable without DeepSpeed, Ray or MLflow. ``config.json`` holds the ModelConfig and the
sensor metadata (band names), so the weights carry what they expect as input.

The registered MLflow model (``gair.serving.pyfunc``) is a pyfunc model directory that
carries such an export as its artifact ``artifacts/gair_export``; every loader here
accepts either directory (:func:`export_dir` finds the export inside).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from gair.configs import from_dict, to_dict
from gair.configs.model import ModelConfig
from gair.models.gair import GAIR

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT_VERSION = 1
PYFUNC_EXPORT_SUBDIR = "artifacts/gair_export"  # where the pyfunc model keeps the export


def save_pretrained(model: GAIR, directory: str | Path, extra: dict | None = None) -> Path:
    """Write ``model.safetensors`` (fp32, contiguous) and ``config.json`` to ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    save_file(state, directory / WEIGHTS_NAME, metadata={"format": "gair", "version": str(FORMAT_VERSION)})
    meta = {"format_version": FORMAT_VERSION, "model": to_dict(model.cfg), **(extra or {})}
    (directory / CONFIG_NAME).write_text(json.dumps(meta, indent=2))
    return directory


def export_dir(directory: str | Path) -> Path:
    """The export directory itself, or the one inside an MLflow pyfunc model directory."""
    directory = Path(directory)
    inner = directory / PYFUNC_EXPORT_SUBDIR
    if not (directory / CONFIG_NAME).is_file() and (directory / "MLmodel").is_file() and inner.is_dir():
        return inner
    return directory


def load_config_json(directory: str | Path) -> ModelConfig:
    path = export_dir(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a GAIR export (expected {WEIGHTS_NAME} + {CONFIG_NAME})")
    meta = json.loads(path.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported format_version {meta.get('format_version')!r}")
    return from_dict(ModelConfig, meta["model"])


def load_preprocessing(directory: str | Path) -> dict:
    """The input statistics an export was trained with (``{"sv_mean": [...], ...}``), or {}."""
    path = export_dir(directory) / CONFIG_NAME
    return dict(json.loads(path.read_text()).get("preprocessing", {})) if path.is_file() else {}


def load_pretrained(directory: str | Path, map_location: str | torch.device = "cpu", strict: bool = True) -> GAIR:
    """Load an export written by :func:`save_pretrained` (or a pyfunc model around one), in eval mode."""
    directory = export_dir(directory)
    cfg = load_config_json(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found")
    model = GAIR(cfg)
    model.load_state_dict(load_file(weights, device=str(map_location)), strict=strict)
    return model.to(map_location).eval()
