"""Checkpoint manifests, verification, fallback, shard cleanup and the stop-at-once policy.

Checkpoints here are written by ``checkpoint.save`` with a stand-in engine that writes
DeepSpeed-like shard files (no DeepSpeed, no Ray cluster); faults come from outside:
a truncated file, a deleted ``train_state.json``, a missing rank manifest.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from gair.train import checkpoint
from gair.train.errors import NonRetryableError, disk_full_error, is_non_retryable


class _Engine:
    """Writes one shard file per rank the way DeepSpeed lays them out."""

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def save_checkpoint(self, directory: str, tag: str, client_state: dict) -> None:
        tag_dir = Path(directory) / tag
        tag_dir.mkdir(parents=True, exist_ok=True)
        (tag_dir / f"zero_pp_rank_{self.rank}_mp_rank_00_optim_states.pt").write_bytes(os.urandom(4096))
        if self.rank == 0:
            (tag_dir / "mp_rank_00_model_states.pt").write_bytes(os.urandom(2048))
            (Path(directory) / "latest").write_text(tag)


def write_checkpoint(run_dir: Path, step: int, world_size: int = 2, name: str | None = None) -> Path:
    """A checkpoint directory as Ray Train merges it: each rank saves into its own folder,
    then every rank's files are copied into one."""
    directory = run_dir / (name or f"checkpoint_step{step:08d}")
    state = checkpoint.TrainState(step=step, epoch=0, batches_in_epoch=step)
    for rank in range(world_size):
        with tempfile.TemporaryDirectory() as local:
            checkpoint.save(_Engine(rank), state, local, rank=rank, world_size=world_size)
            shutil.copytree(local, directory, dirs_exist_ok=True)
    return directory


def test_train_state_round_trips_and_names_its_tag(tmp_path):
    state = checkpoint.TrainState(step=12, epoch=1, batches_in_epoch=5, samples_seen=96)
    assert state.tag == "step00000012"
    (tmp_path / checkpoint.STATE_FILE).write_text(json.dumps(dataclasses.asdict(state)))
    assert checkpoint.read_state(tmp_path) == state


def test_a_complete_checkpoint_verifies(tmp_path):
    directory = write_checkpoint(tmp_path, 4)
    assert checkpoint.verify(directory) == []
    manifest = json.loads((directory / "manifest-rank0.json").read_text())
    assert manifest["world_size"] == 2 and "train_state.json" in manifest["files"]
    assert all(len(f["sha256"]) == 64 and f["size"] > 0 for f in manifest["files"].values())


def test_truncated_missing_and_tampered_files_fail_verification(tmp_path):
    truncated = write_checkpoint(tmp_path, 2)
    shard = truncated / "step00000002" / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    shard.write_bytes(shard.read_bytes()[:100])
    assert any("zero_pp_rank_1" in p and "100 bytes" in p for p in checkpoint.verify(truncated))

    no_state = write_checkpoint(tmp_path, 4)
    (no_state / "train_state.json").unlink()
    assert checkpoint.verify(no_state) == ["train_state.json is missing"]

    tampered = write_checkpoint(tmp_path, 6)
    model = tampered / "step00000006" / "mp_rank_00_model_states.pt"
    model.write_bytes(os.urandom(model.stat().st_size))  # same size, other bytes
    assert checkpoint.verify(tampered) == ["step00000006/mp_rank_00_model_states.pt fails its checksum"]

    one_rank = write_checkpoint(tmp_path, 8)
    (one_rank / "manifest-rank1.json").unlink()
    assert checkpoint.verify(one_rank) == ["no manifest of rank(s) 1 of 2"]

    bare = tmp_path / "checkpoint_step00000010"
    bare.mkdir()
    (bare / "train_state.json").write_text("{}")
    assert "no manifest" in checkpoint.verify(bare)[0]


def test_choose_falls_back_to_the_newest_checkpoint_that_verifies(tmp_path):
    for step in (2, 4, 6):
        write_checkpoint(tmp_path, step)
    (tmp_path / "checkpoint_step00000006" / "train_state.json").unlink()
    lines: list[str] = []
    assert checkpoint.choose_checkpoint(str(tmp_path), None, log=lines.append) == "checkpoint_step00000004"
    assert lines == [
        "checkpoint: checkpoint_step00000006 fails verification: train_state.json is missing",
        "checkpoint: resuming from checkpoint_step00000004, the newest that verifies (skipped checkpoint_step00000006)",
    ]


def test_a_replayed_step_gets_a_fresh_directory_name_and_sorts_newest(tmp_path):
    write_checkpoint(tmp_path, 4)
    write_checkpoint(tmp_path, 6)
    checkpoint.remember_taken(checkpoint.list_checkpoints(str(tmp_path)))
    name = checkpoint.dir_name_for(checkpoint.TrainState(step=6))
    assert name == "checkpoint_step00000006-1"
    assert checkpoint.dir_name_for(checkpoint.TrainState(step=8)) == "checkpoint_step00000008"
    write_checkpoint(tmp_path, 6, name=name)
    assert checkpoint.list_checkpoints(str(tmp_path))[0] == name


def test_no_checkpoint_is_a_fresh_start_and_none_verifying_stops_the_run(tmp_path):
    assert checkpoint.choose_checkpoint(str(tmp_path / "absent"), None, log=print) is None
    directory = write_checkpoint(tmp_path, 2)
    (directory / "train_state.json").write_text("")
    with pytest.raises(NonRetryableError, match="no checkpoint of .* verifies"):
        checkpoint.choose_checkpoint(str(tmp_path), None, log=print)


def test_shards_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"gair-ckpt-{int(dead.stdout)}-abc"
    live = tmp_path / f"gair-ckpt-{os.getpid()}-def"
    for d in (stale, live):
        (d / "step1").mkdir(parents=True)
    assert checkpoint.remove_stale_shards(str(tmp_path)) == [str(stale)]
    assert live.exists() and not stale.exists()


def test_non_retryable_errors_are_recognised_through_the_cause_chain():
    full = OSError(errno.ENOSPC, "No space left on device", "/ckpt/shard.pt")
    assert is_non_retryable(full)
    err = disk_full_error(full, "/ckpt")
    assert "/ckpt/shard.pt" in str(err) and is_non_retryable(err)
    try:
        try:
            raise NonRetryableError("bad")
        except NonRetryableError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert is_non_retryable(outer)
    assert not is_non_retryable(ConnectionError("blip"))
    assert not is_non_retryable(OSError(errno.ECONNREFUSED, "refused"))


def test_the_failure_policy_raises_at_once_on_a_non_retryable_worker_error():
    from ray.train import FailureConfig
    from ray.train.v2._internal.execution.failure_handling.failure_policy import FailureDecision
    from ray.train.v2.api.exceptions import WorkerGroupError

    from gair.train.errors import stop_on_non_retryable_policy

    policy = stop_on_non_retryable_policy(FailureConfig(max_failures=3))
    fatal = WorkerGroupError("x", {0: NonRetryableError("no batch"), 1: RuntimeError("collective aborted")})
    assert policy.make_decision(fatal) == FailureDecision.RAISE
    transient = WorkerGroupError("x", {1: RuntimeError("killed")})
    assert policy.make_decision(transient) == FailureDecision.RETRY


class _BigEngine:
    def save_checkpoint(self, directory: str, tag: str, client_state: dict) -> None:
        (Path(directory) / tag).mkdir(parents=True, exist_ok=True)
        (Path(directory) / tag / "mp_rank_00_model_states.pt").write_bytes(b"\0" * (1 << 20))


def test_a_full_disk_stops_the_run_naming_the_path(tmp_path):
    """The shard's temp folder on a 64 KiB tmpfs (mounted in a private mount namespace)."""
    import shlex
    import shutil

    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare to mount a small tmpfs")
    small = tmp_path / "small"
    small.mkdir()
    code = (
        "import sys, tempfile; sys.path.insert(0, 'tests/train'); tempfile.tempdir = sys.argv[1]\n"
        "from test_checkpoint import _BigEngine\n"
        "from gair.train import checkpoint\n"
        "from gair.train.errors import NonRetryableError\n"
        "try:\n"
        "    checkpoint.report_with_checkpoint(_BigEngine(), checkpoint.TrainState(step=1), {}, rank=0)\n"
        "except NonRetryableError as exc:\n"
        "    import os; print(exc); print(os.listdir(sys.argv[1]))\n"
    )
    cmd = shlex.join([sys.executable, "-c", code, str(small)])
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {shlex.quote(str(small))} && exec {cmd}"],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )  # fmt: skip
    if "mount:" in proc.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2, proc.stdout + proc.stderr[-3000:]
    assert lines[0].startswith(f"disk full writing {small}/gair-ckpt-"), lines
    assert lines[1] == "[]"  # the partial shard is gone


class _LoadingEngine:
    def __init__(self) -> None:
        self.loaded: list[tuple[str, str]] = []

    def load_checkpoint(self, directory: str, tag: str, **kwargs) -> tuple[str, dict]:
        self.loaded.append((Path(directory).name, tag))
        return directory, {}


def test_the_worker_restores_the_newest_checkpoint_that_verifies(tmp_path, monkeypatch):
    """``loop.restore_latest`` in one process (no process group): choose, verify, load."""
    import torch

    from gair.configs import load_config
    from gair.configs.train import PretrainConfig
    from gair.train import loop

    monkeypatch.setattr(loop.ray.train, "get_checkpoint", lambda: None)
    cfg = load_config(PretrainConfig, None, [f"run.storage_path={tmp_path}", "run.name=r"])
    setup = loop.WorkerSetup(_LoadingEngine(), torch.device("cpu"), 0, 1)
    assert loop.restore_latest(setup, cfg) == checkpoint.TrainState()  # nothing yet: a fresh start
    write_checkpoint(tmp_path / "r", 2, world_size=1)
    bad = write_checkpoint(tmp_path / "r", 4, world_size=1)
    (bad / "step00000004" / "mp_rank_00_model_states.pt").write_bytes(b"")
    state = loop.restore_latest(setup, cfg)
    assert state.step == 2 and setup.engine.loaded == [("checkpoint_step00000002", "step00000002")]
    assert checkpoint.dir_name_for(checkpoint.TrainState(step=4)) == "checkpoint_step00000004-1"
