"""End to end: a 3-trial sweep (``configs/tune_smoke.yaml`` with 3 temperatures and one INR sampling
density, each a 2-worker ZeRO-2 run) on a `ray start --head` cluster, trials' checkpoints and the
sweep state on an S3 server, parent/child runs on an MLflow server. (The config's own 2 x 2 grid
is the same code with a fourth trial: ~90 s more on 2 cores, for nothing this test asserts.)

The sweep is run once through a module fixture, in two parts:
- ``jobs/tune.py`` as a subprocess, SIGKILLed once two trials have finished (the good
  temperature runs to step 6; ASHA stops the first bad one at step 3);
- the same command again, through ``ray job submit``: it resumes the sweep, runs the last
  trial, and must not start the finished ones again.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT, ray_head_cluster

pytestmark = pytest.mark.slow

MAX_STEPS, GRACE = 6, 3
TEMPERATURES = [0.5, 0.03, 0.02]  # one good, two far too low: ASHA stops at least the first of those
FINISHED = re.compile(r"\[sweep\] trial (\w+) finished at step (\d+)")


@pytest.fixture(scope="module")
def ray_head_with_s3(s3_server):
    """(GCS address, dashboard address, env) of a `ray start --head` cluster with 2 CPUs.

    Started after the S3 server so that its workers (the trials) inherit the AWS_* settings,
    as the nodes of a real cluster hold their credentials.
    """
    with ray_head_cluster("gt-", dict(os.environ)) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def sweep_setup(s3_server, mlflow_server, tmp_path_factory):
    import boto3

    bucket = f"gair-tune-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
    root = tmp_path_factory.mktemp("sweep")
    name = f"sweep-{uuid.uuid4().hex[:6]}"
    cfg = yaml.safe_load((REPO_ROOT / "configs/tune_smoke.yaml").read_text())
    cfg["base"]["config"] = str(REPO_ROOT / "configs/pretrain_smoke.yaml")
    cfg["base"]["overrides"] += [f"run.synthetic_dir=s3://{bucket}/synthetic"]
    cfg["space"]["temperature"]["values"] = TEMPERATURES
    cfg["space"]["extra_points"]["values"] = [8]
    cfg["run"] = {"name": name, "storage_path": f"s3://{bucket}/sweeps", "output_dir": str(root / "out")}
    cfg["mlflow"] = {"experiment": f"test-{name}"}
    path = root / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env_vars = {
        k: os.environ[k]
        for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    }
    env_vars.update(MLFLOW_TRACKING_URI=mlflow_server, TUNE_GLOBAL_CHECKPOINT_S="2")
    return {"config": path, "name": name, "bucket": bucket, "out": root / "out", "env_vars": env_vars, "root": root}


def run_and_kill(gcs: str, env: dict, setup: dict, after: int, timeout: float = 600) -> tuple[str, list[str]]:
    """Run the sweep driver; SIGKILL it (and its process group) once ``after`` trials finished."""
    log = setup["root"] / "first.log"
    cmd = [sys.executable, "jobs/tune.py", "--config", str(setup["config"])]
    proc_env = {**env, **setup["env_vars"], "RAY_ADDRESS": gcs}
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=proc_env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        deadline = time.time() + timeout
        finished: list[str] = []
        while time.time() < deadline and proc.poll() is None:
            finished = [m.group(1) for m in FINISHED.finditer(log.read_text())]
            if len(finished) >= after:
                break
            time.sleep(1)
        if len(finished) >= after:
            time.sleep(8)  # > TUNE_GLOBAL_CHECKPOINT_S: the sweep state that records them is saved
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    output = log.read_text()
    finished = [m.group(1) for m in FINISHED.finditer(output)]
    if len(finished) < after:
        pytest.fail(f"only {len(finished)} trials finished before the kill:\n{output[-6000:]}")
    return output, finished


def submit(address: str, env: dict, setup: dict, timeout: float = 900) -> str:
    """The same command through `ray job submit`; returns the job's output."""
    runtime_env = {"env_vars": setup["env_vars"], "excludes": ["runs/", "mlflow.db", ".git/", "*.egg-info/", "bench/"]}
    cmd = [
        sys.executable, "-m", "ray.scripts.scripts", "job", "submit", "--address", address,
        "--working-dir", ".", "--runtime-env-json", json.dumps(runtime_env), "--",
        "python", "jobs/tune.py", "--config", str(setup["config"]),
    ]  # fmt: skip
    for _ in range(20):  # the dashboard answers before its job agent is up
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        output = proc.stdout + proc.stderr
        if "No available agent" not in output:
            break
        time.sleep(3)
    (setup["root"] / "second.log").write_text(output)
    if proc.returncode != 0 or "succeeded" not in output:
        pytest.fail(f"job failed (rc {proc.returncode}):\n{output[-6000:]}")
    return output


@pytest.fixture(scope="module")
def sweep(ray_head_with_s3, sweep_setup):
    gcs, address, env = ray_head_with_s3
    first, finished_first = run_and_kill(gcs, env, sweep_setup, after=2)
    second = submit(address, env, sweep_setup)
    return {"first": first, "finished_first": finished_first, "second": second, **sweep_setup}


def _table(out_dir: Path) -> list[dict[str, str]]:
    import csv

    with (out_dir / "results.csv").open() as f:
        return list(csv.DictReader(f))


def test_sweep_ran_every_trial_and_asha_stopped_some(sweep):
    assert "starting sweep" in sweep["first"]
    assert "resuming sweep" in sweep["second"]
    rows = _table(sweep["out"])
    assert len(rows) == len(TEMPERATURES), rows
    steps = {r["trial_id"]: int(r["steps"]) for r in rows}
    stopped = [r for r in rows if r["status"] == "stopped_early"]
    assert stopped and all(int(r["steps"]) < MAX_STEPS for r in stopped), rows
    assert any(r["status"] == "completed" and int(r["steps"]) == MAX_STEPS for r in rows), rows
    assert all(steps[t] >= GRACE for t in steps), steps
    assert "val_loss (last)" in rows[0]


def test_resume_did_not_rerun_finished_trials(sweep):
    from mlflow.tracking import MlflowClient

    from gair.tracking.sweep import STARTS_TAG, TRIAL_TAG

    first_done = set(sweep["finished_first"])
    assert len(first_done) >= 2
    # The trial function prints this line when it starts; none of the finished trials did.
    started_again = set(re.findall(r"trial (\w+): \{.*\} -> Train run", sweep["second"]))
    assert not started_again & first_done, (started_again, first_done)
    client = MlflowClient(sweep["env_vars"]["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name(f"test-{sweep['name']}")
    runs = client.search_runs([exp.experiment_id])
    for run in runs:
        if run.data.tags.get(TRIAL_TAG) in first_done:
            assert run.data.tags[STARTS_TAG] == "1", run.data.tags


def test_mlflow_parent_and_child_runs(sweep):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(sweep["env_vars"]["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name(f"test-{sweep['name']}")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("gair.kind") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED", [r.data.tags for r in parents]
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(TEMPERATURES)
    assert {c.data.tags["gair.tune.status"] for c in children} >= {"completed", "stopped_early"}
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.params["train.num_workers"] == "2"
        assert "val_loss" in child.data.metrics and "loss" in child.data.metrics
        assert len(client.get_metric_history(child.info.run_id, "val_loss")) >= 1
    arts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"results.csv", "results.md", "best_config.yaml", "curves.png"} <= arts, arts
    assert {"val_loss_vs_loss.temperature.png", "val_loss_vs_data.extra_points.png"} <= arts, arts
    assert parent.data.metrics["trials_stopped_early"] >= 1


def test_best_config_is_a_ready_pretraining_config(sweep):
    import boto3

    from gair.configs import load_config
    from gair.configs.train import PretrainConfig

    cfg = load_config(PretrainConfig, sweep["out"] / "best_config.yaml")
    assert cfg.loss.temperature == 0.5  # the far too low temperature loses on val_loss
    assert cfg.run.name == f"{sweep['name']}-best" and cfg.train.max_steps == MAX_STEPS
    key = f"sweeps/{sweep['name']}/output/best_config.yaml"
    body = boto3.client("s3").get_object(Bucket=sweep["bucket"], Key=key)["Body"].read().decode()
    assert "temperature: 0.5" in body
