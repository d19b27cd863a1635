"""A real ``mlflow models serve`` of the registered model answers with the in-process embeddings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import REPO_ROOT, _free_port, _wait_http
from tests.serving.conftest import reference_embeddings
from tests.serving.test_pyfunc import assert_matches, request_table


def register(tracking_uri: str, export: Path, name: str) -> str:
    """The end-of-training path (``trainer.log_and_register``), registered as NAME@current."""
    from gair.configs.train import PretrainConfig
    from gair.tracking.mlflow_run import create_run, experiment_id
    from gair.train.trainer import log_and_register

    cfg = PretrainConfig()
    cfg.mlflow.registered_model, cfg.mlflow.alias = name, "current"
    run = create_run(tracking_uri, experiment_id(tracking_uri, f"test-serve-{name}"), name)
    uri = log_and_register(cfg, run, str(export), {}, 0)
    run.end()
    return uri


@pytest.mark.slow
def test_mlflow_models_serve_answers_http(
    mlflow_server: str, serving_export: Path, synthetic_files: dict, tmp_path: Path, monkeypatch
):
    import mlflow.pyfunc

    from gair.eval.model_uri import resolve_model
    from gair.hub import load_pretrained

    name = f"gair-serve-{uuid.uuid4().hex[:6]}"
    model_uri = register(mlflow_server, serving_export, name)
    assert model_uri == f"models:/{name}@current"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    ref = reference_embeddings(serving_export, synthetic_files["rows"])
    table = request_table(ref)
    in_process = mlflow.pyfunc.load_model(model_uri).predict(table)
    assert_matches(in_process, ref)

    # Evaluation resolves the same registered version to the same weights.
    resolved = resolve_model(model_uri, mlflow_server, dst_dir=tmp_path / "eval")
    a, b = load_pretrained(resolved.local_dir), load_pretrained(serving_export)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))

    port = _free_port()
    # `mlflow models serve` execs `uvicorn`: the venv's bin must be on PATH even when not activated.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server, "PYTHONPATH": str(REPO_ROOT), "PATH": path}
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port), "--workers", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        _wait_http(f"http://127.0.0.1:{port}/ping", timeout=240)
        body = json.dumps({"dataframe_split": table.to_dict(orient="split", index=False)}).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=120) as resp:
            served = pd.DataFrame(json.loads(resp.read())["predictions"])
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
    assert_matches(served, ref)
    for col in ("location_embedding", "rs_embedding", "sv_embedding"):
        np.testing.assert_allclose(
            np.array(served[col].tolist()), np.array(in_process[col].tolist()), atol=1e-5, rtol=0, err_msg=col
        )
