"""`python jobs/pretrain.py` against outside faults: a truncated file in the latest
checkpoint, checkpoints that all fail verification, and a rerun of a finished run.

One short run (4 steps, a checkpoint every 2) is shared; each test then damages or reruns it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.train.test_stop_resume import _stop_processes_under, job_env

pytestmark = pytest.mark.slow

SMOKE = "configs/pretrain_smoke.yaml"


def run_job(tmp: Path, name: str, ray_tmpdir: str, *sets: str, timeout: float = 900) -> subprocess.CompletedProcess:
    base = [
        f"run.name={name}",
        f"run.storage_path={tmp / 'runs'}",
        f"run.synthetic_dir={tmp / 'synthetic'}",
        "run.keep_checkpoints=3",
        "train.checkpoint_every=2",
        "train.log_every=1",
        "optim.warmup_steps=1",
        f"mlflow.tracking_uri=sqlite:///{tmp / 'mlflow.db'}",
        "mlflow.experiment=failsafe",
        "mlflow.registered_model=gair-failsafe",
    ]
    args = [a for s in [*base, *sets] for a in ("--set", s)]
    try:
        proc = subprocess.run(
            [sys.executable, "jobs/pretrain.py", "--config", SMOKE, *args],
            cwd=REPO_ROOT, env=job_env(ray_tmpdir), capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
    finally:
        _stop_processes_under(ray_tmpdir)
    (tmp / f"{name}-{uuid.uuid4().hex[:4]}.log").write_text(proc.stdout + proc.stderr)
    return proc


@pytest.fixture(scope="module")
def finished(tmp_path_factory, short_tmpdir):
    tmp = tmp_path_factory.mktemp("failsafe")
    ray_tmpdir = short_tmpdir("gfs-")
    proc = run_job(tmp, "base", ray_tmpdir, "train.max_steps=4")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    return tmp, ray_tmpdir


def _versions(tmp: Path) -> tuple[int, int, str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("failsafe").experiment_id])
    versions = client.search_model_versions("name='gair-failsafe'")
    alias = client.get_model_version_by_alias("gair-failsafe", "current").version
    return len(runs), len(versions), alias


def test_rerunning_a_finished_run_changes_nothing(finished):
    tmp, ray_tmpdir = finished
    before = _versions(tmp)
    proc = run_job(tmp, "base", ray_tmpdir, "train.max_steps=4")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "run base already finished at step 4; nothing to do" in out
    assert "Started a local Ray instance" not in out
    assert _versions(tmp) == before


def test_a_truncated_latest_checkpoint_falls_back_to_the_previous_one(finished):
    tmp, ray_tmpdir = finished
    src = tmp / "runs" / "base"
    run_dir = tmp / "runs" / "trunc"
    for ckpt in ("checkpoint_step00000002", "checkpoint_step00000004"):
        shutil.copytree(src / ckpt, run_dir / ckpt)  # no Ray snapshot: only the directories
    shard = next((run_dir / "checkpoint_step00000004" / "step00000004").glob("zero_pp_rank_1_*optim_states.pt"))
    shard.write_bytes(shard.read_bytes()[:1000])  # an outside fault: a truncated upload
    proc = run_job(tmp, "trunc", ray_tmpdir, "train.max_steps=6")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert re.search(
        r"checkpoint: checkpoint_step00000004 fails verification: step00000004/zero_pp_rank_1_\S+ has 1000 bytes", out
    ), out[-6000:]
    assert "checkpoint: resuming from checkpoint_step00000002" in out
    assert "resumed from step 2 " in out
    assert "done: 6 steps" in out
    assert (run_dir / "checkpoint_step00000004-1" / "manifest-rank1.json").is_file()  # the replay's own name
    lines = [ln for ln in out.splitlines() if "step 3/6 loss=" in ln]
    assert len(lines) == 1, lines  # every worker line once (not stdout and stderr both)


def test_no_checkpoint_that_verifies_stops_at_once(finished):
    tmp, ray_tmpdir = finished
    run_dir = tmp / "runs" / "broken"
    shutil.copytree(tmp / "runs" / "base" / "checkpoint_step00000004", run_dir / "checkpoint_step00000004")
    (run_dir / "checkpoint_step00000004" / "train_state.json").unlink()
    proc = run_job(tmp, "broken", ray_tmpdir, "train.max_steps=6", "train.max_failures=3")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-6000:]
    assert "error: training stopped (a retry cannot fix this): worker 0: no checkpoint of" in out, out[-4000:]
    assert out.count("Started training worker group") == 1, "retried instead of stopping"
