"""gair.serving.pyfunc: the MLflow model returns the embeddings of the training decode path."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gair.hub import load_pretrained
from gair.serving.pyfunc import EMBEDDING_COLUMNS, save_pyfunc
from tests.serving.conftest import reference_embeddings


def request_table(ref: dict) -> pd.DataFrame:
    """Every observation as a full request: point, its tile and its street view (path or base64)."""
    ids = sorted(ref)
    return pd.DataFrame(
        {
            "lon": [ref[i]["lonlat"][0] for i in ids],
            "lat": [ref[i]["lonlat"][1] for i in ids],
            "rs_uri": [ref[i]["rs_uri"] for i in ids],
            "sv_image": [
                ref[i]["sv_uri"] if k % 2 else base64.b64encode(Path(ref[i]["sv_uri"]).read_bytes()).decode()
                for k, i in enumerate(ids)
            ],
        }
    )


def assert_matches(pred: pd.DataFrame, ref: dict, atol: float = 1e-5) -> None:
    ids = sorted(ref)
    assert list(pred["error"]) == [""] * len(ids)
    for col in EMBEDDING_COLUMNS:
        got = np.array([np.asarray(v, dtype=np.float64) for v in pred[col]])
        want = np.stack([ref[i][col] for i in ids])
        np.testing.assert_allclose(got, want, atol=atol, rtol=0, err_msg=col)


@pytest.fixture(scope="module")
def pyfunc_dir(serving_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_pyfunc(serving_export, tmp_path_factory.mktemp("pyfunc") / "model")


def test_pyfunc_predict_matches_training_path(pyfunc_dir: Path, serving_export: Path, synthetic_files: dict):
    import mlflow.pyfunc

    ref = reference_embeddings(serving_export, synthetic_files["rows"])
    model = mlflow.pyfunc.load_model(str(pyfunc_dir))
    assert_matches(model.predict(request_table(ref)), ref)
    # Location-only input (the input example's form) leaves the other columns empty.
    pred = model.predict(pd.DataFrame({"lon": [8.54], "lat": [47.37]}))
    assert pred["rs_embedding"][0] is None and len(pred["location_embedding"][0]) == 64


def test_pyfunc_reports_bad_rows_and_answers_the_rest(pyfunc_dir: Path, serving_export: Path, synthetic_files: dict):
    import mlflow.pyfunc

    ref = reference_embeddings(serving_export, synthetic_files["rows"])
    obs = ref[sorted(ref)[0]]
    far = [0.5, 0.5]
    df = pd.DataFrame(
        {
            "lon": [far[0], obs["lonlat"][0], 190.0, np.nan],
            "lat": [far[1], obs["lonlat"][1], 0.0, np.nan],
            "rs_uri": [obs["rs_uri"], obs["rs_uri"], None, None],
            "sv_image": [None, "not-an-image-or-path", None, None],
        }
    )
    pred = mlflow.pyfunc.load_model(str(pyfunc_dir)).predict(df)
    assert "outside tile" in pred["error"][0] and pred["rs_embedding"][0] is None
    assert pred["rs_global_embedding"][0] is not None and pred["location_embedding"][0] is not None
    assert "sv_image" in pred["error"][1]
    np.testing.assert_allclose(pred["rs_embedding"][1], obs["rs_embedding"], atol=1e-5)
    assert "out of range" in pred["error"][2]
    assert "nothing to embed" in pred["error"][3]


def test_hub_loads_the_pyfunc_directory(pyfunc_dir: Path, serving_export: Path):
    a, b = load_pretrained(pyfunc_dir), load_pretrained(serving_export)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    assert (pyfunc_dir / "MLmodel").is_file() and (pyfunc_dir / "artifacts" / "gair_export" / "config.json").is_file()
