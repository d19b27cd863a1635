"""Stop a running `python jobs/pretrain.py` mid-run (Ctrl-C) and resume it by `run.name`.

The job starts its own local Ray (no `ray start`), so this also covers the plain
``python jobs/pretrain.py`` path; ``tests/train/test_pretrain_job.py`` covers ``ray job submit``.
The first run is interrupted once Ray Train has committed a checkpoint; the same command
run again must continue from that checkpoint (not from step 0) and finish at
``train.max_steps``, in the same MLflow run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

SMOKE = "configs/pretrain_smoke.yaml"
MAX_STEPS, CKPT_EVERY = 10, 2
SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train's record of committed checkpoints


@pytest.fixture
def private_ray_tmpdir():
    """A private RAY_TMPDIR: the job's local Ray neither joins nor collides with another
    cluster on this machine, and its processes can be found (and stopped) by that path."""
    path = tempfile.mkdtemp(prefix="gsr-", dir="/tmp")  # short: Ray's socket paths have a length limit
    yield path
    _stop_processes_under(path)


def _processes_under(path: str) -> list[int]:
    """Processes whose command line names ``path``, or whose environment has ``RAY_TMPDIR=path``.

    Ray workers rename themselves (``ray::RayTrainWorker``...), so their command line no longer
    names the temp dir; they inherit the job's ``RAY_TMPDIR``, which still finds them.
    """
    out = subprocess.run(["pgrep", "-f", path], capture_output=True, text=True).stdout.split()
    pids = {int(p) for p in out}
    marker = f"RAY_TMPDIR={path}".encode() + b"\0"
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if marker in (proc / "environ").read_bytes():
                    pids.add(int(proc.name))
    pids.discard(os.getpid())
    return sorted(pids)


def _stop_processes_under(path: str, timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL, the processes of the Ray instance under ``path``; wait until they are gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = _processes_under(path)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if pids:
            time.sleep(2)
    deadline = time.monotonic() + timeout
    while _processes_under(path) and time.monotonic() < deadline:
        time.sleep(0.5)


def job_command(tmp: Path, name: str) -> list[str]:
    sets = [
        f"run.name={name}",
        f"run.storage_path={tmp / 'runs'}",
        f"run.synthetic_dir={tmp / 'synthetic'}",
        f"train.max_steps={MAX_STEPS}",
        f"train.checkpoint_every={CKPT_EVERY}",
        f"mlflow.tracking_uri=sqlite:///{tmp / 'mlflow.db'}",
        f"mlflow.experiment=stop-resume-{name}",
        f"mlflow.registered_model=gair-{name}",
    ]
    return [sys.executable, "jobs/pretrain.py", "--config", SMOKE, *[a for s in sets for a in ("--set", s)]]


def job_env(ray_tmpdir: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(RAY_TMPDIR=ray_tmpdir, PYTHONUNBUFFERED="1")
    return env


def committed_step(run_dir: Path) -> int | None:
    """Step of the latest checkpoint Ray Train has committed for this run, if any."""
    try:
        snapshot = json.loads((run_dir / SNAPSHOT).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    latest = snapshot.get("latest_checkpoint_result")
    if not latest:
        return None
    return json.loads((run_dir / latest["checkpoint_dir_name"] / "train_state.json").read_text())["step"]


def interrupt(proc: subprocess.Popen, timeout: float = 90) -> int:
    """Ctrl-C: SIGINT to the job's process group; SIGKILL if it has not exited in time."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait(timeout=30)


def newest_verified_step(run_dir: Path) -> int | None:
    """Step of the checkpoint a resumed run must take: the newest on storage that verifies.

    That can be newer than Ray Train's last committed one: the workers may have written (and
    completed) the next checkpoint before the stop reached the controller.
    """
    from gair.train import checkpoint

    name = checkpoint.choose_checkpoint(str(run_dir), None, log=lambda *_: None)
    if name is None:
        return None
    return json.loads((run_dir / name / "train_state.json").read_text())["step"]


def progress_steps(output: str) -> list[int]:
    return sorted({int(m) for m in re.findall(rf"step (\d+)/{MAX_STEPS} loss=", output)})


def test_stop_midrun_and_resume_by_name(tmp_path, private_ray_tmpdir):
    name = f"stop-{uuid.uuid4().hex[:6]}"
    cmd, env = job_command(tmp_path, name), job_env(private_ray_tmpdir)
    run_dir = tmp_path / "runs" / name
    log1 = tmp_path / "first.log"

    # First run: interrupt it as soon as a checkpoint is committed.
    with open(log1, "w") as out:
        proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 240
        while committed_step(run_dir) is None and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        rc1 = interrupt(proc) if proc.poll() is None else proc.returncode
    first = log1.read_text()
    _stop_processes_under(private_ray_tmpdir)  # whatever of its local Ray survived the Ctrl-C
    assert not _processes_under(private_ray_tmpdir), "processes of the first run outlived the stop"
    committed = committed_step(run_dir)
    assert committed is not None, f"no checkpoint committed before the deadline:\n{first[-4000:]}"
    assert rc1 != 0 and "done:" not in first, f"the first run finished instead of being stopped:\n{first[-4000:]}"
    saved = newest_verified_step(run_dir)
    assert saved is not None and committed <= saved < MAX_STEPS, (committed, saved)
    assert not (run_dir / "export").exists(), "an interrupted run must not export"

    # The same command again resumes from the committed checkpoint and finishes.
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=400)
    second = proc.stdout + proc.stderr
    (tmp_path / "second.log").write_text(second)
    assert proc.returncode == 0, second[-6000:]
    resumed = re.findall(r"resumed from step (\d+)", second)
    assert resumed == [str(saved)], (resumed, saved, committed, second[-6000:])
    steps = progress_steps(second)
    assert steps and min(steps) > saved and max(steps) == MAX_STEPS, steps
    assert re.search(rf"done: {MAX_STEPS} steps", second), second[-3000:]
    assert committed_step(run_dir) == MAX_STEPS
    assert (run_dir / "export" / "model.safetensors").is_file()
    # One MLflow run for the name: the interrupted one, resumed and finished.
    run_ids = [re.search(r"MLflow run (\w+)", text).group(1) for text in (first, second)]
    assert run_ids[0] == run_ids[1], run_ids

    from mlflow.tracking import MlflowClient

    run = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(run_ids[0])
    assert run.info.status == "FINISHED"
