"""gair.tracking.artifacts: end-of-training artifacts and the registered model."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gair.hub import save_pretrained
from gair.tracking import log_training_artifacts, metric_history, register_model, start_or_resume_run
from tests.models._factory import tiny_model

pytestmark = pytest.mark.slow  # shares the MLflow store of tests/tracking (slow to create)


def test_artifacts_and_registration(sqlite_uri, experiment, tmp_path):
    run = start_or_resume_run(sqlite_uri, experiment, "train", {})
    for step, loss in ((2, 1.0), (1, 2.0)):
        run.log_metrics({"loss": loss, "lr": 1e-3}, step=step)
    assert metric_history(run)["loss"] == [(1, 2.0), (2, 1.0)]
    export = save_pretrained(tiny_model(), tmp_path / "export")  # a real gair.hub export
    config = {"mlflow": {"tracking_uri": "https://u:pw@host/x"}, "s3": {"secret_key": "abc"}, "lr": 0.1}
    log_training_artifacts(run, export, config=config, model_card="# card")
    local = tmp_path / "down"
    local.mkdir()
    names = {a.path for a in run.client.list_artifacts(run.run_id)}
    assert names == {"config.yaml", "MODEL_CARD.md", "training_curves.png", "model"}
    logged = yaml.safe_load(Path(run.client.download_artifacts(run.run_id, "config.yaml", str(local))).read_text())
    assert logged == {"mlflow": {"tracking_uri": "https://host/x"}, "s3": {"secret_key": "***"}, "lr": 0.1}

    first = register_model(run, f"{experiment}-model", "current", tags={"run_name": "train"})
    second = register_model(run, f"{experiment}-model", "current")
    assert (first.version, second.version) == ("1", "2")
    assert second.uri == f"models:/{experiment}-model@current"
    assert str(run.client.get_model_version_by_alias(f"{experiment}-model", "current").version) == "2"
    model_files = {a.path for a in run.client.list_artifacts(run.run_id, "model")}
    assert "model/MLmodel" in model_files  # a pyfunc model directory around the export
