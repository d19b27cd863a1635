"""The manifest: a versioned Parquet schema with one row per remote-sensing (RS) tile.

A manifest is a directory of Parquet shards (``part-00000.parquet``, ...). Each row is
one RS tile with its georeference and the list of its street-view (SV) observations, so
an RS tile is stored once however many street views look at it.

Columns (version 1):

| column | type | meaning |
|---|---|---|
| ``tile_id`` | string | unique id of the tile |
| ``crs`` | string | the tile's CRS as rasterio accepts it (``EPSG:32633``, WKT) |
| ``transform`` | list<float64>[6] | GDAL/rasterio affine a, b, c, d, e, f (pixel -> CRS) |
| ``width``, ``height`` | int32 | tile size in pixels |
| ``band_names`` | list<string> | band names in band order (``B1`` ... ``B12``) |
| ``rs_bytes`` | binary, nullable | the GeoTIFF itself (inline) ... |
| ``rs_uri`` | string, nullable | ... or where it lives (local path, ``s3://``, ``gs://``) |
| ``observations`` | list<struct> | the street views, see below |

An observation is ``obs_id`` (string, unique in the manifest), ``sv_bytes`` (JPEG,
nullable) or ``sv_uri`` (nullable), ``lon`` and ``lat`` (float64 degrees, WGS84),
and optional capture metadata: ``capture_time`` (ISO 8601 string), ``heading``
(degrees, float32) and ``meta_json`` (free-form JSON text).

The schema version is stored in the Parquet schema metadata under
``gair.manifest.version``; readers reject versions they do not know.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1
VERSION_KEY = b"gair.manifest.version"

OBSERVATION_TYPE = pa.struct(
    [
        pa.field("obs_id", pa.string(), nullable=False),
        pa.field("sv_bytes", pa.binary()),
        pa.field("sv_uri", pa.string()),
        pa.field("lon", pa.float64()),
        pa.field("lat", pa.float64()),
        pa.field("capture_time", pa.string()),
        pa.field("heading", pa.float32()),
        pa.field("meta_json", pa.string()),
    ]
)

MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("tile_id", pa.string(), nullable=False),
        pa.field("crs", pa.string(), nullable=False),
        pa.field("transform", pa.list_(pa.float64(), 6), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("band_names", pa.list_(pa.string()), nullable=False),
        pa.field("rs_bytes", pa.binary()),
        pa.field("rs_uri", pa.string()),
        pa.field("observations", pa.list_(OBSERVATION_TYPE), nullable=False),
    ],
    metadata={VERSION_KEY: str(SCHEMA_VERSION).encode()},
)

COLUMNS = tuple(MANIFEST_SCHEMA.names)
OBSERVATION_FIELDS = tuple(f.name for f in OBSERVATION_TYPE)


class SchemaError(ValueError):
    """A Parquet file is not a GAIR manifest of a supported version."""


def schema_problems(schema: pa.Schema) -> list[str]:
    """Human-readable reasons why ``schema`` is not a readable manifest (empty when it is).

    Extra columns are allowed (a writer may add its own); missing columns, changed types
    and unknown versions are not.
    """
    problems = []
    version = (schema.metadata or {}).get(VERSION_KEY)
    if version is None:
        problems.append(f"no schema version (metadata key {VERSION_KEY.decode()!r}): not a GAIR manifest")
    elif version.decode() != str(SCHEMA_VERSION):
        problems.append(f"schema version {version.decode()} is not supported (this code reads {SCHEMA_VERSION})")
    for expected in MANIFEST_SCHEMA:
        if expected.name not in schema.names:
            problems.append(f"missing column {expected.name!r}")
            continue
        actual = schema.field(expected.name).type
        if not _compatible(actual, expected.type):
            problems.append(f"column {expected.name!r} has type {actual}, expected {expected.type}")
    return problems


def check_schema(schema: pa.Schema) -> None:
    """Raise :class:`SchemaError` listing every problem if ``schema`` is not a manifest."""
    problems = schema_problems(schema)
    if problems:
        raise SchemaError("; ".join(problems))


def _compatible(actual: pa.DataType, expected: pa.DataType) -> bool:
    # Large/small binary and string variants, and nullability, are the same data to us.
    if actual == expected:
        return True
    if pa.types.is_struct(expected):
        if not pa.types.is_struct(actual):
            return False
        names = {actual.field(i).name: actual.field(i).type for i in range(actual.num_fields)}
        return all(
            f.name in names and _compatible(names[f.name], f.type)
            for f in (expected.field(i) for i in range(expected.num_fields))
        )
    if pa.types.is_list(expected) or pa.types.is_fixed_size_list(expected):
        if not (pa.types.is_list(actual) or pa.types.is_large_list(actual) or pa.types.is_fixed_size_list(actual)):
            return False
        return _compatible(actual.value_type, expected.value_type)
    families = [
        (pa.types.is_binary, pa.types.is_large_binary),
        (pa.types.is_string, pa.types.is_large_string),
    ]
    return any(any(f(expected) for f in fam) and any(f(actual) for f in fam) for fam in families)
