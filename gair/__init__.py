"""GAIR at scale: geo-aligned implicit representations, pretrained on Ray.

Public entry points: :class:`GAIR` / :func:`build_model`, :func:`load_reference_checkpoint`
(official weights), :func:`save_pretrained` / :func:`load_pretrained` (our safetensors
exports), and :func:`lonlat_to_xy` (map a location into a georeferenced tile).

Attributes are imported on first use, so ``import gair.models`` needs only torch and timm
(not rasterio, safetensors or the training stack).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

__version__ = "0.1.0"

# MLflow's telemetry: when its thread cannot fetch its config (no internet, as on many clusters
# and here), it deletes an environment variable, racing every reader of os.environ in the
# process. A test saw `KeyError: '_MLFLOW_TELEMETRY_SESSION_ID'` out of requests' proxy lookup
# inside `MlflowClient.create_run`. Off unless MLFLOW_DISABLE_TELEMETRY is set (set it to false
# to send MLflow's usage data).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

_EXPORTS = {
    "GAIR": "gair.models.gair",
    "build_model": "gair.models.gair",
    "ModelConfig": "gair.configs.model",
    "LossConfig": "gair.configs.model",
    "load_reference_checkpoint": "gair.models._reference",
    "load_pretrained": "gair.hub",
    "save_pretrained": "gair.hub",
    "lonlat_to_xy": "gair.geo",
    "xy_to_lonlat": "gair.geo",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gair' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
