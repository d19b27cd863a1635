"""No credential reaches anything a run writes.

`python jobs/pretrain.py` runs with the MLflow password in the tracking URI
(``http://user:password@host:port``) and S3 keys in the ``AWS_*`` variables, checkpoints
and data on the S3 server; then its stdout and stderr, Ray's log folder, the MLflow
server's store and artifacts, and every object in the bucket are searched for them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.train.test_stop_resume import _stop_processes_under

pytestmark = pytest.mark.slow

PASSWORD = "Pw-" + uuid.uuid4().hex[:12]
ACCESS_KEY = "AKIA" + uuid.uuid4().hex[:16].upper()
SECRET_KEY = "sk-" + uuid.uuid4().hex


def _files_containing(root: Path, needles: list[bytes]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                data = path.read_bytes()
            except OSError:
                continue
            hits += [f"{path}: {n.decode()[:6]}..." for n in needles if n in data]
    return hits


def test_no_credential_in_anything_the_run_wrote(s3_server, mlflow_server, tmp_path_factory):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server)
    bucket = f"gair-creds-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    host = mlflow_server.split("://", 1)[1]
    ray_tmpdir = tempfile.mkdtemp(prefix="gcr-", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    env.update(
        RAY_TMPDIR=ray_tmpdir,
        PYTHONUNBUFFERED="1",
        AWS_ACCESS_KEY_ID=ACCESS_KEY,  # moto takes any keys
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        MLFLOW_TRACKING_URI=f"http://gair:{PASSWORD}@{host}",
    )
    name = f"creds-{uuid.uuid4().hex[:6]}"
    sets = [
        f"run.name={name}",
        f"run.storage_path=s3://{bucket}/runs",
        f"run.synthetic_dir=s3://{bucket}/synthetic",
        "train.max_steps=2",
        "train.checkpoint_every=2",
        "train.log_every=1",
        "optim.warmup_steps=1",
        f"mlflow.experiment=creds-{name}",
        f"mlflow.registered_model=gair-{name}",
    ]
    cmd = [sys.executable, "jobs/pretrain.py", "--config", "configs/pretrain_smoke.yaml"]
    try:
        proc = subprocess.run(
            [*cmd, *[a for s in sets for a in ("--set", s)]],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
    finally:
        _stop_processes_under(ray_tmpdir)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "done: 2 steps" in out, out[-6000:]
    assert "View run" in out or "MLflow run" in out  # the lines that used to carry the password

    needles = [PASSWORD.encode(), SECRET_KEY.encode(), ACCESS_KEY.encode()]
    assert not [n for n in needles if n.decode() in out], "a credential in the job's output"
    assert not _files_containing(Path(ray_tmpdir), needles), "a credential in Ray's log folder"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server)
    run = client.search_runs([client.get_experiment_by_name(f"creds-{name}").experiment_id])[0]
    stored = repr(run.data.params) + repr(run.data.tags)
    local = Path(tempfile.mkdtemp(prefix="gcr-art-"))
    client.download_artifacts(run.info.run_id, "", str(local))
    assert not [n for n in needles if n.decode() in stored], "a credential in the MLflow run's params or tags"
    assert not _files_containing(local, needles), "a credential in the MLflow artifacts"
    for store in tmp_path_factory.getbasetemp().glob("mlflow*"):  # the server's sqlite store and artifacts
        assert not _files_containing(store, needles), "a credential in the MLflow server's store"
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            assert not [n for n in needles if n in body], f"a credential in s3://{bucket}/{obj['Key']}"
