"""gair.eval.model_uri: every URI form resolves to a loadable export; a missing one fails clearly."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import torch

from gair.eval.model_uri import ModelNotFoundError, resolve_model
from gair.hub import load_pretrained


@pytest.fixture(scope="module")
def registered(mlflow_server: str, tiny_export: Path) -> dict[str, str]:
    """A run with the export under artifact path ``model``, registered as version 1 with alias ``current``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server, registry_uri=mlflow_server)
    exp = client.create_experiment(f"test-model-uri-{uuid.uuid4().hex[:6]}")
    run = client.create_run(exp)
    run_id = run.info.run_id
    client.log_artifacts(run_id, str(tiny_export), "model")
    client.set_terminated(run_id)
    name = f"gair-uri-{uuid.uuid4().hex[:6]}"
    client.create_registered_model(name)
    version = client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run_id)
    client.set_registered_model_alias(name, "current", version.version)
    return {"uri": mlflow_server, "run_id": run_id, "name": name, "experiment_id": exp}


def _same_weights(path: str, reference: Path) -> None:
    a, b = load_pretrained(path), load_pretrained(reference)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_local_directory(tiny_export: Path):
    got = resolve_model(str(tiny_export))
    assert got.run_id is None and Path(got.local_dir) == tiny_export.resolve()
    assert resolve_model(f"file://{tiny_export}").local_dir == got.local_dir


@pytest.mark.parametrize("form", ["alias", "version", "latest", "runs"])
def test_mlflow_uris(form: str, registered: dict, tiny_export: Path, tmp_path: Path):
    uri = {
        "alias": f"models:/{registered['name']}@current",
        "version": f"models:/{registered['name']}/1",
        "latest": f"models:/{registered['name']}/latest",
        "runs": f"runs:/{registered['run_id']}/model",
    }[form]
    got = resolve_model(uri, registered["uri"], dst_dir=tmp_path)
    assert got.run_id == registered["run_id"]
    assert got.experiment_id == registered["experiment_id"]
    assert got.tags()["gair.eval.source_run_id"] == registered["run_id"]
    _same_weights(got.local_dir, tiny_export)


@pytest.mark.parametrize(
    "uri, match",
    [
        ("models:/no-such-model@current", "no registered model named 'no-such-model'"),
        ("models:/{name}@nope", r"has no alias 'nope'.*aliases: \['current'\]"),
        ("models:/{name}/7", r"has no version '7'.*versions: \['1'\]"),
        ("runs:/0123456789abcdef0123456789abcdef/model", "no run '0123456789abcdef0123456789abcdef'"),
        ("runs:/{run_id}/weights", r"no GAIR export at artifact path 'weights'.*'model'"),
        ("/nonexistent/gair/export", "does not exist"),
        ("s3://bucket/export", "not supported"),
        ("", "no model URI"),
    ],
)
def test_missing_models_fail_clearly(uri: str, match: str, registered: dict, tmp_path: Path):
    uri = uri.format(**registered)
    with pytest.raises(ModelNotFoundError, match=match):
        resolve_model(uri, registered["uri"], dst_dir=tmp_path)


def test_directory_that_is_not_an_export(tmp_path: Path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match="missing model.safetensors"):
        resolve_model(str(tmp_path))
