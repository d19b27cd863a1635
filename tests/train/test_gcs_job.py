"""`python jobs/pretrain.py` with its data and its storage on ``gs://`` (a GCS emulator on
loopback): the manifest and the images it references are read from the bucket, checkpoints
and the export are written there, a rerun with more steps resumes from the bucket's
checkpoint, and a rerun of the finished run changes nothing.

The job learns the endpoint from ``data.gcs_endpoint_url`` alone (``STORAGE_EMULATOR_HOST``
is unset in its environment): every part of it -- preflight, the Ray Data read and decode
tasks, Ray Train's storage, the workers' checkpoint listing, the export, ``FINISHED.json`` --
has to take the endpoint from the config.
"""

from __future__ import annotations

import re
import uuid
from urllib.parse import urlparse

import pyarrow.fs as pafs
import pytest

from gair.data import synthetic
from tests.conftest import create_gcs_bucket
from tests.train.test_failsafe_job import run_job

pytestmark = pytest.mark.slow


def _objects(endpoint: str, prefix: str) -> set[str]:
    """Object names under ``bucket/prefix``, listed with pyarrow's own GCS client (not gair's)."""
    fs = pafs.GcsFileSystem(endpoint_override=urlparse(endpoint).netloc, scheme="http", anonymous=True)
    infos = fs.get_file_info(pafs.FileSelector(prefix, recursive=True))
    return {i.path[len(prefix) + 1 :] for i in infos if i.type == pafs.FileType.File}


def test_pretrain_reads_and_writes_gs(gcs_server, tmp_path_factory, short_tmpdir, monkeypatch):
    bucket = create_gcs_bucket(gcs_server, f"gair-job-{uuid.uuid4().hex[:8]}")
    manifest = synthetic.write_synthetic(  # images as objects, referenced by gs:// URIs
        f"gs://{bucket}/data", tiles=32, obs_per_tile=2, seed=0, inline=False, tile_size=64, sv_size=48
    )
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")  # the job's environment (job_env copies os.environ)
    tmp = tmp_path_factory.mktemp("gcsjob")
    ray_tmpdir = short_tmpdir("ggcs-")
    name = f"gcs-{uuid.uuid4().hex[:6]}"
    sets = [
        f"data.train_manifest={manifest}",
        f"data.gcs_endpoint_url={gcs_server}",
        f"run.storage_path=gs://{bucket}/runs",
        "mlflow.registered_model=gair-gcs",
    ]

    proc = run_job(tmp, name, ray_tmpdir, *sets, "train.max_steps=2")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert f"done: 2 steps; checkpoint gs://{bucket}/runs/{name}/checkpoint_step00000002" in out, out[-4000:]
    assert f"export gs://{bucket}/runs/{name}/export" in out
    objects = _objects(gcs_server, f"{bucket}/runs/{name}")
    ckpt = "checkpoint_step00000002"
    assert {f"{ckpt}/train_state.json", f"{ckpt}/manifest-rank0.json", f"{ckpt}/manifest-rank1.json"} <= objects
    assert any(o.startswith(f"{ckpt}/step00000002/") and o.endswith("optim_states.pt") for o in objects), objects
    assert {"export/model.safetensors", "export/config.json", "FINISHED.json"} <= objects, objects
    assert not any(".gair-write-probe-" in o for o in objects)

    proc = run_job(tmp, name, ray_tmpdir, *sets, "train.max_steps=4")  # more steps: resume from the bucket
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "resumed from step 2 " in out and "done: 4 steps" in out, out[-4000:]
    assert not re.search(r"step [12]/4 loss=", out)  # nothing replayed
    objects = _objects(gcs_server, f"{bucket}/runs/{name}")
    assert "checkpoint_step00000004/train_state.json" in objects

    proc = run_job(tmp, name, ray_tmpdir, *sets, "train.max_steps=4")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert f"run {name} already finished at step 4; nothing to do (export gs://{bucket}/runs/{name}/export" in out
    assert "Started a local Ray instance" not in out
