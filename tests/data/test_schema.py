from __future__ import annotations

import pyarrow as pa
import pytest

from gair.data import schema


def test_manifest_schema_is_versioned_and_accepted() -> None:
    assert schema.MANIFEST_SCHEMA.metadata[schema.VERSION_KEY] == b"1"
    assert schema.schema_problems(schema.MANIFEST_SCHEMA) == []


def test_large_types_are_compatible() -> None:
    fields = [
        pa.field(
            f.name, pa.large_binary() if f.name == "rs_bytes" else pa.large_string() if f.name == "crs" else f.type
        )
        for f in schema.MANIFEST_SCHEMA
    ]
    schema.check_schema(pa.schema(fields, metadata=schema.MANIFEST_SCHEMA.metadata))


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda s: s.remove_metadata(), "no schema version"),
        (lambda s: s.with_metadata({schema.VERSION_KEY: b"99"}), "version 99 is not supported"),
        (lambda s: s.remove(s.get_field_index("observations")), "missing column 'observations'"),
        (lambda s: s.set(s.get_field_index("width"), pa.field("width", pa.string())), "column 'width' has type string"),
    ],
)
def test_bad_schemas_are_rejected_with_reason(change, expected: str) -> None:
    with pytest.raises(schema.SchemaError, match=expected):
        schema.check_schema(change(schema.MANIFEST_SCHEMA))


def test_extra_columns_are_allowed() -> None:
    s = schema.MANIFEST_SCHEMA.append(pa.field("source", pa.string()))
    assert schema.schema_problems(s) == []
