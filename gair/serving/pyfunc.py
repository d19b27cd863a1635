"""GAIR as an MLflow pyfunc model: ``mlflow.pyfunc.load_model(uri).predict(df)`` -> embeddings.

The model directory is a standard pyfunc model whose one artifact, ``gair_export``, is the
``gair.hub`` export (``model.safetensors`` + ``config.json``), so ``gair.hub.load_pretrained``
and evaluation read the same files (``gair.hub.export_dir`` finds them inside).

Input: a table, one row per request item, every column optional:

| column | type | meaning |
|---|---|---|
| ``lon``, ``lat`` | double | a point, (lon, lat) degrees WGS84 |
| ``rs_uri`` | string | a GeoTIFF tile (local path or ``s3://``), in the manifest's format |
| ``sv_image`` | string | a street view: path/URI, or the image bytes in base64 |

Output: one row per input row, embeddings as float lists (null where not asked for):

| column | when | what |
|---|---|---|
| ``location_embedding`` | lon, lat | the location encoder at (lon, lat) |
| ``rs_embedding`` | rs_uri, lon, lat | the localized RS feature at the point (``query_mode``, NILI by default) |
| ``rs_global_embedding`` | rs_uri | mean of the tile's RS tokens |
| ``sv_embedding`` | sv_image | SV encoder output (pooler), what probes use |
| ``sv_projected`` | sv_image | the SV embedding projected into the RS/location space |
| ``error`` | always | empty, or why (part of) the row could not be embedded |

A bad row (a point outside its tile, an unreadable image) gets an ``error`` and nulls; the
other rows still come back.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from gair.hub import CONFIG_NAME, WEIGHTS_NAME, export_dir

try:  # the class must subclass PythonModel; keep importing this module cheap when MLflow is absent
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover
    PythonModel = object  # type: ignore[assignment,misc]

ARTIFACT_KEY = "gair_export"
INPUT_COLUMNS = ("lon", "lat", "rs_uri", "sv_image")
EMBEDDING_COLUMNS = ("location_embedding", "rs_embedding", "rs_global_embedding", "sv_embedding", "sv_projected")


class GAIRPythonModel(PythonModel):
    """The pyfunc wrapper; see the module docstring for the table it takes and returns."""

    def load_context(self, context: Any) -> None:
        import torch

        from gair.serving.embedder import Embedder

        device = os.environ.get("GAIR_SERVING_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
        self.embedder = Embedder.from_export(context.artifacts[ARTIFACT_KEY], device=device)

    def predict(self, context, model_input, params=None):  # untyped: MLflow would infer a signature from hints
        return embed_table(self.embedder, model_input, query_mode=(params or {}).get("query_mode") or None)


def embed_table(embedder: Any, table: Any, query_mode: str | None = None) -> Any:
    """The pyfunc ``predict`` body, usable without MLflow: a DataFrame in, a DataFrame out."""
    import pandas as pd

    df = pd.DataFrame(table).reset_index(drop=True)
    unknown = sorted(set(df.columns) - set(INPUT_COLUMNS))
    if unknown:
        raise ValueError(f"unknown input columns {unknown}; expected some of {list(INPUT_COLUMNS)}")
    n = len(df)
    out: dict[str, list] = {c: [None] * n for c in EMBEDDING_COLUMNS}
    errors: list[list[str]] = [[] for _ in range(n)]

    lonlat = _lonlat(df)
    has_point = np.isfinite(lonlat).all(axis=1)
    rs_uri, sv = _strings(df, "rs_uri"), _strings(df, "sv_image")
    valid = has_point & (np.abs(lonlat[:, 0]) <= 180) & (np.abs(lonlat[:, 1]) <= 90)
    for i in np.flatnonzero(has_point & ~valid):
        errors[i].append(f"lon, lat = {lonlat[i].tolist()} out of range")
    for i in np.flatnonzero(~has_point & np.isfinite(lonlat).any(axis=1)):
        errors[i].append("lon and lat must be given together")
    if valid.any():
        for i, e in zip(np.flatnonzero(valid), embedder.locations(lonlat[valid]), strict=True):
            out["location_embedding"][i] = e.tolist()

    _embed_tiles(embedder, rs_uri, lonlat, valid, has_point, query_mode, out, errors)
    _embed_street_views(embedder, sv, out, errors)
    for i in range(n):
        if not (has_point[i] or rs_uri[i] or sv[i]) and not errors[i]:
            errors[i].append(f"nothing to embed: give lon+lat, rs_uri or sv_image (columns {list(INPUT_COLUMNS)})")
    return pd.DataFrame({**out, "error": ["; ".join(e) for e in errors]})


def _lonlat(df: Any) -> np.ndarray:
    cols = []
    for c in ("lon", "lat"):
        cols.append(
            np.asarray(df[c], dtype=np.float64) if c in df.columns else np.full(len(df), np.nan, dtype=np.float64)
        )
    return np.stack(cols, axis=1) if len(df) else np.zeros((0, 2))


def _strings(df: Any, col: str) -> list[str | bytes]:
    if col not in df.columns:
        return [""] * len(df)
    values = []
    for v in df[col].tolist():
        if v is None or (isinstance(v, float) and math.isnan(v)):
            values.append("")
        else:
            values.append(v if isinstance(v, (bytes, bytearray)) else str(v))
    return values


def _embed_tiles(embedder, rs_uri, lonlat, valid, has_point, query_mode, out, errors) -> None:
    """Each distinct tile is read and encoded once; its rows' points are queried together."""
    by_uri: dict[str, list[int]] = {}
    for i, uri in enumerate(rs_uri):
        if uri:
            by_uri.setdefault(uri, []).append(i)
    for uri, rows in by_uri.items():
        try:
            tile = embedder.load_tile(uri)
        except Exception as exc:  # noqa: BLE001 - reported per row: the other rows still get answers
            for i in rows:
                errors[i].append(f"rs_uri {uri}: {type(exc).__name__}: {exc}")
            continue
        tokens = embedder.rs_tokens(tile.rs_CSS[None])
        global_emb = embedder.rs_global(tokens)[0].tolist()
        for i in rows:
            out["rs_global_embedding"][i] = global_emb
        pts = [i for i in rows if valid[i]]
        if not pts:
            continue
        xy, inside = tile.xy(lonlat[pts])
        local = embedder.rs_local(tokens, xy[inside], query_mode)
        for i, e in zip(np.asarray(pts)[inside], local, strict=True):
            out["rs_embedding"][i] = e.tolist()
        for i, q in zip(np.asarray(pts)[~inside], xy[~inside], strict=True):
            errors[i].append(f"point {lonlat[i].tolist()} is outside tile {uri} (xy {np.round(q, 3).tolist()})")


def _embed_street_views(embedder, sv, out, errors) -> None:
    rows, images = [], []
    for i, ref in enumerate(sv):
        if not ref:
            continue
        try:
            images.append(embedder.read_image(ref))
            rows.append(i)
        except Exception as exc:  # noqa: BLE001 - reported per row
            errors[i].append(f"sv_image: {type(exc).__name__}: {exc}")
    if not rows:
        return
    pooled, projected = embedder.street_views(images)
    for i, p, q in zip(rows, pooled, projected, strict=True):
        out["sv_embedding"][i] = p.tolist()
        out["sv_projected"][i] = q.tolist()


# --------------------------------------------------------------------- saving


def signature() -> Any:
    """Input/output schema and the ``query_mode`` parameter, all optional columns."""
    from mlflow.models import ModelSignature
    from mlflow.types import DataType
    from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema(
        [
            ColSpec(DataType.double, "lon", required=False),
            ColSpec(DataType.double, "lat", required=False),
            ColSpec(DataType.string, "rs_uri", required=False),
            ColSpec(DataType.string, "sv_image", required=False),
        ]
    )
    outputs = Schema(
        [ColSpec(Array(DataType.float), c, required=False) for c in EMBEDDING_COLUMNS]
        + [ColSpec(DataType.string, "error")]
    )
    params = ParamSchema([ParamSpec("query_mode", DataType.string, "nili")])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def input_example() -> Any:
    """Two location queries: valid without any file, so MLflow can check it at save time."""
    import pandas as pd

    return pd.DataFrame({"lon": [8.5417, -122.4194], "lat": [47.3769, 37.7749]})


def pip_requirements() -> list[str]:
    """What the model imports at load time (the ``gair`` package itself must be installed too)."""
    import mlflow
    import torch

    return [
        f"mlflow=={mlflow.__version__}",
        f"torch=={torch.__version__.split('+')[0]}",
        "timm>=1.0.15,<2",
        "safetensors>=0.4",
        "rasterio>=1.4,<2",
        "pillow>=10",
        "numpy>=1.26",
        "pandas>=2.1",
        "pyarrow>=17",
    ]


def save_pyfunc(export: str | Path, path: str | Path) -> Path:
    """Write a pyfunc model directory at ``path`` around the export directory ``export``.

    The export lands at ``<path>/artifacts/gair_export`` (``gair.hub.PYFUNC_EXPORT_SUBDIR``).
    """
    import mlflow.pyfunc

    export = export_dir(export)
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="gair-pyfunc-") as tmp:
        # MLflow names the copied artifact after its source folder: stage it as gair_export.
        staged = Path(tmp) / ARTIFACT_KEY
        staged.mkdir()
        for name in (WEIGHTS_NAME, CONFIG_NAME):
            _link_or_copy(export / name, staged / name)
        mlflow.pyfunc.save_model(
            str(path),
            python_model=GAIRPythonModel(),
            artifacts={ARTIFACT_KEY: str(staged)},
            signature=signature(),
            input_example=input_example(),
            pip_requirements=pip_requirements(),
            metadata={"gair_export": ARTIFACT_KEY},
        )
    return path


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)  # the weights can be GBs: no second copy where the filesystem allows
    except OSError:
        shutil.copy2(src, dst)
