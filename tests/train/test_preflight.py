"""Checks made before Ray starts: manifests, a writable storage path, workers that fit."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gair.configs import load_config
from gair.configs.train import PretrainConfig
from gair.data import storage
from gair.train import preflight
from tests.conftest import REPO_ROOT


def _cfg(tmp_path, *sets: str) -> PretrainConfig:
    base = [f"run.storage_path={tmp_path / 'runs'}", f"run.synthetic_dir={tmp_path / 'synthetic'}"]
    return load_config(PretrainConfig, REPO_ROOT / "configs/pretrain_smoke.yaml", [*base, *sets])


def test_a_missing_or_foreign_manifest_is_one_clear_error(tmp_path):
    with pytest.raises(preflight.PreflightError, match=r"data.train_manifest: manifest .*absent does not exist"):
        preflight.check_inputs(_cfg(tmp_path, f"data.train_manifest={tmp_path / 'absent'}"))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    pq.write_table(pa.table({"tile_id": ["a"], "x": [1]}), foreign / "part-0.parquet")
    with pytest.raises(preflight.PreflightError, match="is not a GAIR manifest: no schema version"):
        preflight.check_inputs(_cfg(tmp_path, f"data.train_manifest={foreign}"))


def _check_inputs_under(readonly: Path, storage_path: Path) -> str:
    """Run the input checks in a child process that sees ``readonly`` as a read-only path:
    a read-only tmpfs mounted in a private mount namespace when run as root (root ignores
    permission bits), a directory without write permission otherwise."""
    code = (
        "from gair.configs import load_config; from gair.configs.train import PretrainConfig\n"
        "from gair.train import preflight\n"
        f"cfg = load_config(PretrainConfig, None, ['run.storage_path={storage_path}'])\n"
        "try:\n    preflight.check_inputs(cfg)\nexcept preflight.PreflightError as e:\n    print(e)"
    )
    cmd = [sys.executable, "-c", code]
    if os.geteuid() == 0:
        if not shutil.which("unshare"):
            pytest.skip("running as root without unshare: no way to make a read-only path")
        mount = f"mount -t tmpfs -o ro,size=1m tmpfs {shlex.quote(str(readonly))} && exec {shlex.join(cmd)}"
        cmd = ["unshare", "-m", "sh", "-c", mount]
    else:
        readonly.chmod(0o555)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    if "mount:" in proc.stderr:
        pytest.skip(f"cannot mount a read-only tmpfs here: {proc.stderr.strip()}")
    return proc.stdout.strip()


def test_a_read_only_storage_path_is_one_clear_error(tmp_path):
    readonly = tmp_path / "ro"
    readonly.mkdir()
    try:
        line = _check_inputs_under(readonly, readonly / "runs")
    finally:
        readonly.chmod(0o755)
    assert line.startswith(f"run.storage_path: {readonly / 'runs'} is not writable"), line
    assert len(line.splitlines()) == 1


def test_workers_that_do_not_fit_the_cluster_are_refused(tmp_path):
    cfg = _cfg(tmp_path, "train.num_workers=8")
    with pytest.raises(preflight.PreflightError, match=r"the cluster has 2 CPU, the job needs 4.5 CPU"):
        preflight.check_resources(cfg, {"CPU": 2.0})
    preflight.check_resources(_cfg(tmp_path), {"CPU": 2.0})  # the smoke config fits 2 CPUs
    gpu = _cfg(tmp_path, "train.use_gpu=true", "train.num_workers=2")
    with pytest.raises(preflight.PreflightError, match="0 GPU"):
        preflight.check_resources(gpu, {"CPU": 16.0})
    preflight.check_resources(_cfg(tmp_path, "train.num_workers=8", "run.check_resources=false"), {"CPU": 2.0})


def test_require_placement_without_a_node_offering_the_resource_is_refused(tmp_path):
    cfg = _cfg(tmp_path, "data.decode_placement=require")
    with pytest.raises(preflight.PreflightError, match="no node offers resource 'preprocess'"):
        preflight.check_resources(cfg, {"CPU": 16.0})
    preflight.check_resources(cfg, {"CPU": 16.0, "preprocess": 32.0})
    preflight.check_resources(
        _cfg(tmp_path, "data.decode_placement=require", "run.check_resources=false"), {"CPU": 2.0}
    )
    preflight.check_resources(_cfg(tmp_path), {"CPU": 2.0})  # auto: runs anywhere without one


def test_a_storage_path_in_a_missing_bucket_says_so_and_creates_nothing(tmp_path, s3_server):
    import boto3

    cfg = _cfg(tmp_path, "run.storage_path=s3://gair-no-such-bucket/runs")
    with pytest.raises(preflight.PreflightError, match="bucket 'gair-no-such-bucket' does not exist"):
        preflight.check_inputs(cfg)
    with pytest.raises(storage.BucketNotFoundError):
        storage.write_bytes("s3://gair-no-such-bucket/x/y", b"1")
    buckets = [b["Name"] for b in boto3.client("s3", endpoint_url=s3_server).list_buckets()["Buckets"]]
    assert "gair-no-such-bucket" not in buckets


def test_a_writable_bucket_passes_and_leaves_no_probe(tmp_path, s3_bucket):
    preflight.check_inputs(_cfg(tmp_path, f"run.storage_path=s3://{s3_bucket}/runs"))
    fs, path = storage.resolve(f"s3://{s3_bucket}/runs")
    import pyarrow.fs as pafs

    assert fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=True)) == []


def _job(tmp_path, *sets: str) -> subprocess.CompletedProcess:
    args = [a for s in sets for a in ("--set", s)]
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:1"}  # a Ray start would fail loudly, not silently pass
    return subprocess.run(
        [sys.executable, "jobs/pretrain.py", "--config", "configs/pretrain_smoke.yaml",
         "--set", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}", *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=400,
    )  # fmt: skip


def test_the_job_exits_2_with_one_line_before_ray_or_mlflow(tmp_path):
    proc = _job(tmp_path, f"run.storage_path={tmp_path / 'runs'}", f"data.train_manifest={tmp_path / 'absent'}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [
        f"error: data.train_manifest: manifest {tmp_path / 'absent'} does not exist"
    ]
    assert not (tmp_path / "mlflow.db").exists()  # no MLflow run (not even a store) was opened


def test_every_mixed_manifest_is_checked(tmp_path):
    from gair.data import synthetic

    synthetic_manifest = synthetic.write_synthetic(
        str(tmp_path / "syn"), tiles=2, obs_per_tile=1, seed=0, tile_size=16, sv_size=16
    )
    preflight.check_inputs(_cfg(tmp_path, f"data.train_manifests={synthetic_manifest}:2,{synthetic_manifest}:1"))
    cfg = _cfg(tmp_path, f"data.train_manifests={synthetic_manifest}:2,{tmp_path / 'absent'}:1")
    with pytest.raises(preflight.PreflightError, match=r"data.train_manifests\[1\] .*absent does not exist"):
        preflight.check_inputs(cfg)
