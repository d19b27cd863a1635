"""The data plane: manifest schema, storage, decoding, transforms, synthetic data, Ray Data pipeline.

``gair.data.pipeline`` imports Ray; import it explicitly (``from gair.data import pipeline``)
so that the pure modules stay importable without it.
"""

from __future__ import annotations

import importlib
from typing import Any

# Names are imported on first use, so that ``gair.data.storage`` (weights from object
# storage) does not pull in decoding and rasterio, e.g. in bench/gpu_step.py on a GPU image.
_EXPORTS = {
    "BadRowError": "gair.data.decode",
    "DecodeSpec": "gair.data.decode",
    "Reason": "gair.data.decode",
    "decode_row": "gair.data.decode",
    "MANIFEST_SCHEMA": "gair.data.schema",
    "SCHEMA_VERSION": "gair.data.schema",
    "SchemaError": "gair.data.schema",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gair.data' has no attribute {name!r}")
