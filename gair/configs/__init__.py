"""Typed configuration: the dataclass sections and the YAML/override loader.

The loader API (``load_config``, ``from_dict``, ``field``, ...) lives in
:mod:`gair.configs.base` and is re-exported here; import it from ``gair.configs``.
"""

from gair.configs.base import (
    ConfigError,
    apply_overrides,
    describe,
    field,
    flatten,
    format_help,
    from_dict,
    load_config,
    parse_override,
    save_config,
    to_dict,
)
from gair.configs.model import LossConfig, ModelConfig

__all__ = [
    "ConfigError",
    "LossConfig",
    "ModelConfig",
    "apply_overrides",
    "describe",
    "field",
    "flatten",
    "format_help",
    "from_dict",
    "load_config",
    "parse_override",
    "save_config",
    "to_dict",
]
