"""Typed configuration dataclasses and the YAML/override loader."""

from gair.configs._base import ConfigError, format_help, from_dict, load_config, save_config, to_dict
from gair.configs.model import LossConfig, ModelConfig

__all__ = [
    "ConfigError",
    "LossConfig",
    "ModelConfig",
    "format_help",
    "from_dict",
    "load_config",
    "save_config",
    "to_dict",
]
