"""GAIR at scale: geo-aligned implicit representations, pretrained on Ray.

Public entry points: :class:`GAIR` / :func:`build_model`, :func:`load_reference_checkpoint`
(official weights), :func:`save_pretrained` / :func:`load_pretrained` (our safetensors
exports), and :func:`lonlat_to_xy` (map a location into a georeferenced tile).
"""

from gair.configs.model import LossConfig, ModelConfig
from gair.geo import lonlat_to_xy, xy_to_lonlat
from gair.hub import load_pretrained, save_pretrained
from gair.models._reference import load_reference_checkpoint
from gair.models.gair import GAIR, build_model

__version__ = "0.1.0"

__all__ = [
    "GAIR",
    "LossConfig",
    "ModelConfig",
    "build_model",
    "load_pretrained",
    "load_reference_checkpoint",
    "lonlat_to_xy",
    "save_pretrained",
    "xy_to_lonlat",
]
