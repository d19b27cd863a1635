"""The data plane: manifest schema, storage, decoding, transforms, synthetic data, Ray Data pipeline.

``gair.data.pipeline`` imports Ray; import it explicitly (``from gair.data import pipeline``)
so that the pure modules stay importable without it.
"""

from gair.data.decode import BadRowError, DecodeSpec, Reason, decode_row
from gair.data.schema import MANIFEST_SCHEMA, SCHEMA_VERSION, SchemaError

__all__ = ["MANIFEST_SCHEMA", "SCHEMA_VERSION", "BadRowError", "DecodeSpec", "Reason", "SchemaError", "decode_row"]
