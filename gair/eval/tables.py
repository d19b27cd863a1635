"""Reading the CSV inputs of the evaluation tasks, with clear errors for bad ones."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import pandas as pd

from gair.data import storage


class CSVInputError(ValueError):
    """A task's CSV is missing, unreadable, lacks columns or has no usable rows."""


def read_csv(uri: str, required: Sequence[str], *, what: str, s3: storage.S3Options | None = None) -> pd.DataFrame:
    """A CSV (local path or s3://) that must have ``required`` columns and at least one row."""
    try:
        data = storage.read_bytes(uri, s3)
    except (FileNotFoundError, IsADirectoryError) as exc:
        where = "" if storage.is_remote(uri) or os.path.isabs(uri) else f" (resolved to {os.path.abspath(uri)})"
        raise CSVInputError(f"{what}: CSV {uri} does not exist{where}") from exc
    try:
        df = pd.read_csv(io.BytesIO(data))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CSVInputError(f"{what}: {uri} is not a readable CSV ({exc})") from exc
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise CSVInputError(f"{what}: CSV {uri} lacks column(s) {missing} (it has {list(df.columns)})")
    if df.empty:
        raise CSVInputError(f"{what}: CSV {uri} has no rows")
    return df


def absolute_uris(uris: Sequence[str], csv_uri: str) -> list[str]:
    """Paths relative to the CSV's folder made absolute (URIs and absolute paths unchanged)."""
    base = csv_uri.rsplit("/", 1)[0] if storage.is_remote(csv_uri) else os.path.dirname(os.path.abspath(csv_uri))
    out = []
    for u in uris:
        u = str(u)
        out.append(u if storage.is_remote(u) or os.path.isabs(u) else storage.join(base, u))
    return out
