"""End to end: `ray job submit ... jobs/pretrain.py` on a `ray start --head` cluster, data and
checkpoints on an S3 server, metrics/artifacts/registry on an MLflow server.

The runs are shared through module-scoped fixtures (each costs a minute or two on 2 cores):
- ``first_run``: the smoke config (2 workers, ZeRO-2) with one worker SIGKILLed after step 6;
  the run recovers from the step-4 checkpoint and finishes at step 10.
- ``resumed_run``: the same ``run.name`` submitted again with more steps: it continues
  from step 10 instead of restarting.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, ray_head_cluster

pytestmark = pytest.mark.slow

SMOKE = "configs/pretrain_smoke.yaml"
STEPS, FAULT_STEP, CKPT_EVERY = 10, 6, 4


@pytest.fixture(scope="module")
def ray_head_2_cpus():
    """Dashboard address of a `ray start --head` cluster with 2 CPUs (token auth on).

    Uses ``GAIR_TEST_RAY_ADDRESS`` when CI started one; otherwise starts its own with a
    private temp dir, so that a plain ``ray.init()`` elsewhere does not join it.
    """
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    if os.environ.get("GAIR_TEST_RAY_ADDRESS"):
        yield os.environ["GAIR_TEST_RAY_ADDRESS"], env
        return
    with ray_head_cluster("gr-", env) as (_, address, cluster_env):
        yield address, cluster_env


def submit(address: str, env: dict, sets: list[str], env_vars: dict[str, str], timeout: float = 900) -> str:
    """`ray job submit --working-dir . -- python jobs/pretrain.py ...`; returns the job's output."""
    runtime_env = {"env_vars": env_vars, "excludes": ["runs/", "mlflow.db", ".git/", "*.egg-info/", "bench/"]}
    cmd = [
        sys.executable, "-m", "ray.scripts.scripts", "job", "submit", "--address", address,
        "--working-dir", ".", "--runtime-env-json", json.dumps(runtime_env), "--",
        "python", "jobs/pretrain.py", "--config", SMOKE, *[a for s in sets for a in ("--set", s)],
    ]  # fmt: skip
    for _ in range(20):  # the dashboard answers before its job agent is up
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        output = proc.stdout + proc.stderr
        if "No available agent" not in output:
            break
        time.sleep(3)
    Path(tempfile.mkdtemp(prefix="gair-job-")).joinpath("output.log").write_text(output)  # for debugging
    if proc.returncode != 0 or "succeeded" not in output:
        pytest.fail(f"job failed (rc {proc.returncode}):\n{output[-6000:]}")
    return output


def logged_steps(output: str) -> list[tuple[int, float]]:
    """(step, loss) of the progress lines printed by rank 0 (deduplicated)."""
    seen = {}
    for m in re.finditer(r"step (\d+)/\d+ loss=([\d.e+-]+)", output):
        seen.setdefault(int(m.group(1)), float(m.group(2)))
    return sorted(seen.items())


@pytest.fixture(scope="module")
def job_env(s3_server, mlflow_server, tmp_path_factory):
    import boto3

    bucket = f"gair-pretrain-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
    marker = tmp_path_factory.mktemp("fault") / "killed"
    env_vars = {
        k: os.environ[k]
        for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    }
    env_vars.update(MLFLOW_TRACKING_URI=mlflow_server, GAIR_FAULT_STEP=str(FAULT_STEP), GAIR_FAULT_MARKER=str(marker))
    name = f"smoke-{uuid.uuid4().hex[:6]}"
    sets = [
        f"run.name={name}",
        f"run.storage_path=s3://{bucket}/runs",
        f"run.synthetic_dir=s3://{bucket}/synthetic",
        f"train.max_steps={STEPS}",
        f"train.checkpoint_every={CKPT_EVERY}",
        f"mlflow.experiment=test-{name}",
        f"mlflow.registered_model=gair-{name}",
    ]
    return {
        "bucket": bucket,
        "name": name,
        "sets": sets,
        "env_vars": env_vars,
        "marker": marker,
        "mlflow": mlflow_server,
    }


@pytest.fixture(scope="module")
def first_run(ray_head_2_cpus, job_env):
    address, env = ray_head_2_cpus
    return submit(address, env, job_env["sets"], job_env["env_vars"])


@pytest.fixture(scope="module")
def resumed_run(ray_head_2_cpus, job_env, first_run):
    address, env = ray_head_2_cpus
    env_vars = {k: v for k, v in job_env["env_vars"].items() if not k.startswith("GAIR_FAULT")}
    return submit(address, env, [*job_env["sets"], f"train.max_steps={STEPS + 4}"], env_vars)


def _s3_keys(bucket: str, prefix: str) -> list[str]:
    import boto3

    s3 = boto3.client("s3")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_job_trains_loss_falls_checkpoints_on_s3(first_run, job_env):
    steps = logged_steps(first_run)
    assert steps[-1][0] == STEPS, steps
    first_loss, last_loss = steps[0][1], steps[-1][1]
    assert last_loss < first_loss, steps
    keys = _s3_keys(job_env["bucket"], f"runs/{job_env['name']}/")
    ckpts = {k.split("/")[2] for k in keys if "/checkpoint_step" in k}
    assert f"checkpoint_step{STEPS:08d}" in ckpts, sorted(ckpts)
    assert len(ckpts) <= 2  # run.keep_checkpoints
    assert any(k.endswith(f"checkpoint_step{STEPS:08d}/train_state.json") for k in keys)
    assert any("zero_pp_rank_1" in k for k in keys), "rank 1's ZeRO shard is in the checkpoint"
    assert any(k.endswith("export/model.safetensors") for k in keys)


def test_job_recovers_from_killed_worker(first_run, job_env):
    assert job_env["marker"].exists(), "the fault hook did not fire"
    assert f"SIGKILL rank 1 at step {FAULT_STEP}" in first_run or job_env["marker"].read_text().startswith("killed")
    # Restarted from the latest checkpoint before the kill (step 4), at most one interval lost.
    assert re.search(rf"resumed from step {CKPT_EVERY}\b", first_run), first_run[-4000:]
    assert logged_steps(first_run)[-1][0] == STEPS


def test_mlflow_run_metrics_artifacts_and_registered_model(first_run, job_env):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(job_env["mlflow"])
    exp = client.get_experiment_by_name(f"test-{job_env['name']}")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    for key in ("loss", "lr", "temperature", "samples_per_s", "data_wait_fraction"):
        assert key in run.data.metrics, run.data.metrics.keys()
    assert len(client.get_metric_history(run.info.run_id, "loss")) >= STEPS // 2
    assert run.data.params["train.zero_stage"] == "2"
    assert run.data.params["train.num_workers"] == "2"
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "MODEL_CARD.md", "training_curves.png", "model"} <= arts, arts
    model_files = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "model")}
    assert {"MLmodel", "python_model.pkl", "artifacts"} <= model_files, model_files  # a pyfunc model
    export_files = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "model/artifacts/gair_export")}
    assert {"model.safetensors", "config.json"} <= export_files
    version = client.get_model_version_by_alias(f"gair-{job_env['name']}", "current")
    assert version.run_id == run.info.run_id
    # No secret in params or tags.
    flat = json.dumps({**run.data.params, **run.data.tags})
    assert (
        os.environ["AWS_SECRET_ACCESS_KEY"] not in flat
        or os.environ["AWS_SECRET_ACCESS_KEY"] == "testing"
        and ("AWS_SECRET" not in flat)
    )


def test_exported_weights_reproduce_embeddings(first_run, job_env, tmp_path):
    """models:/NAME@ALIAS -> gair.hub.load_pretrained gives the checkpoint's embeddings."""
    import mlflow
    import torch

    from gair.hub import load_pretrained
    from gair.models.gair import GAIR
    from gair.train.export import consolidated_state_dict, gair_state_dict

    mlflow.set_tracking_uri(job_env["mlflow"])
    path = mlflow.artifacts.download_artifacts(f"models:/gair-{job_env['name']}@current", dst_path=str(tmp_path / "m"))
    exported = load_pretrained(path)

    ckpt = tmp_path / "ckpt"
    prefix = f"runs/{job_env['name']}/checkpoint_step{STEPS:08d}/"
    import boto3

    s3 = boto3.client("s3")
    for key in _s3_keys(job_env["bucket"], prefix):
        dest = ckpt / key[len(prefix) :]
        dest.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(job_env["bucket"], key, str(dest))
    trained = GAIR(exported.cfg)
    trained.load_state_dict(gair_state_dict(consolidated_state_dict(ckpt)))
    trained.eval()

    g = torch.Generator().manual_seed(0)
    cfg = exported.cfg
    rs = torch.randn(2, len(cfg.rs_bands), cfg.rs_image_size, cfg.rs_image_size, generator=g)
    sv = torch.randn(3, 3, cfg.sv_image_size, cfg.sv_image_size, generator=g)
    lonlat = torch.tensor([[11.5, 48.1], [-70.0, -33.4]])
    xy = torch.rand(2, 5, 2, generator=g) * 2 - 1
    with torch.no_grad():
        for fn, args in [
            ("encode_rs", (rs,)),
            ("encode_sv", (sv,)),
            ("encode_location", (lonlat,)),
            ("query_rs", (rs, xy)),
        ]:
            torch.testing.assert_close(getattr(exported, fn)(*args), getattr(trained, fn)(*args), rtol=0, atol=0)
    # And the weights moved away from the initialisation.
    torch.manual_seed(0)
    assert not torch.allclose(GAIR(cfg).encode_rs(rs), exported.encode_rs(rs))


def test_rerun_with_same_name_resumes(resumed_run):
    assert re.search(rf"resumed from step {STEPS}\b", resumed_run), resumed_run[-4000:]
    steps = [s for s, _ in logged_steps(resumed_run)]
    assert steps and min(steps) > STEPS and max(steps) == STEPS + 4, steps
