"""The Ray Data manifest builder and validator against the threaded ones, on a real local Ray."""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from gair.data import manifest, manifest_ray, schema, storage, synthetic
from gair.data.decode import Reason
from tests.data.conftest import BAD_ROW_CORPUS, bad_row, good_row, manifest_content, normalized_rejects, write_rows
from tests.data.test_manifest import _reference_layout, run_job

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local(s3_server: str):
    """A private local Ray with 2 CPUs, started after the S3 server (its workers inherit the AWS_* variables)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def assert_same_build(a: manifest.BuildResult, b: manifest.BuildResult) -> None:
    assert (a.tiles, a.observations) == (b.tiles, b.observations)
    assert manifest_content(a.manifest_uri) == manifest_content(b.manifest_uri)
    assert normalized_rejects(a.rejected) == normalized_rejects(b.rejected)
    assert a.reasons() == b.reasons()


def test_same_manifest_as_threads_on_sample_data(ray_local, tmp_path: Path, real_tiles) -> None:
    _reference_layout(tmp_path / "root", real_tiles[:6])
    root = str(tmp_path / "root")
    for inline in (True, False):
        threads = manifest.build_from_folders(root, str(tmp_path / f"t{inline}"), inline=inline, workers=2, log=None)
        ray_ = manifest_ray.build_from_folders(root, str(tmp_path / f"r{inline}"), inline=inline, progress=False)
        assert ray_.tiles == 6 and ray_.observations == 12
        assert_same_build(threads, ray_)


@pytest.mark.parametrize("source", ["folders", "table"])
def test_same_manifest_as_threads_with_bad_rows(ray_local, tmp_path: Path, source: str) -> None:
    info = synthetic.write_reference_layout(str(tmp_path / "in"), groups=5, tiles_per_group=2, obs_per_tile=3, bad=True)
    src = info["root"] if source == "folders" else info["table"]
    threaded = manifest.build_from_folders if source == "folders" else manifest.build_from_table
    built = manifest_ray.build_from_folders if source == "folders" else manifest_ray.build_from_table
    kwargs = {"writer_kwargs": {"rows_per_shard": 3, "row_group_rows": 2}}
    threads = threaded(src, str(tmp_path / "threads"), workers=2, log=None, **kwargs)
    ray_ = built(src, str(tmp_path / "ray"), tiles_per_task=3, progress=False, **kwargs)  # several tasks
    assert_same_build(threads, ray_)
    expected = {Reason.LONLAT_NAN, Reason.LONLAT_OUT_OF_RANGE, Reason.OBS_OUTSIDE_TILE, Reason.RS_UNDECODABLE}
    expected |= {"missing_metadata"} if source == "folders" else {Reason.SV_MISSING_FILE, Reason.RS_MISSING_FILE}
    assert set(ray_.reasons()) == expected
    assert ray_.tiles == 10 and ray_.observations == 10 * 3 + 1  # + the garbage street view: not decoded here
    # Shards and row groups as the options say; the manifest schema (with its version) in every shard.
    shards = sorted((tmp_path / "ray").glob("*.parquet"))
    assert len(shards) == len(ray_.shards) >= 4
    for s in shards:
        meta = pq.ParquetFile(s).metadata
        assert meta.num_rows <= 3 and all(meta.row_group(i).num_rows <= 2 for i in range(meta.num_row_groups))
        schema.check_schema(pq.read_schema(s))


def test_build_job_on_ray_to_s3(ray_local, s3_bucket: str, tmp_path: Path) -> None:
    info = synthetic.write_reference_layout(str(tmp_path / "in"), groups=6, obs_per_tile=2, bad=True)
    out = f"s3://{s3_bucket}/manifest"
    proc = run_job("build_manifest.py", "--table", info["table"], "--out", out, "--rejects", str(tmp_path / "r.csv"),
                   "--rows-per-shard", "4", "--no-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    threads = manifest.build_from_table(info["table"], str(tmp_path / "threads"), workers=2, log=None)
    assert (
        f"{threads.tiles} tiles, {threads.observations} observations, {len(threads.rejected)} rejected" in proc.stdout
    )
    for reason, n in threads.reasons().items():
        assert f"  {reason}: {n}\n" in proc.stdout
    assert manifest_content(out) == manifest_content(threads.manifest_uri)
    rejects = list(csv.reader((tmp_path / "r.csv").read_text().splitlines()))
    assert rejects[0] == ["id", "reason", "detail"]
    assert normalized_rejects([tuple(r) for r in rejects[1:]]) == normalized_rejects(threads.rejected)
    files = storage.list_parquet(out)
    fs, _ = storage.resolve(out)
    assert files and all(pq.ParquetFile(fs.open_input_file(f)).metadata.num_rows <= 4 for f in files)
    # The job refuses to mix with existing shards (before any task runs), and replaces them with --overwrite.
    proc = run_job("build_manifest.py", "--table", info["table"], "--out", out, "--no-progress")
    assert proc.returncode == 2 and "already holds" in proc.stderr
    proc = run_job("build_manifest.py", "--table", info["table"], "--out", out, "--overwrite", "--no-progress")
    assert proc.returncode == 0 and manifest_content(out) == manifest_content(threads.manifest_uri)


def test_validate_on_ray_reports_bad_rows_and_corrupted_shards(ray_local, tmp_path: Path) -> None:
    rows = [good_row(0), good_row(0), good_row(1), *[bad_row(k) for k, _, _ in BAD_ROW_CORPUS]]
    uri = write_rows(str(tmp_path / "bad"), rows, rows_per_shard=8, row_group_rows=3)
    threads = manifest.validate_manifest(uri, workers=2)
    ray_ = manifest_ray.validate_manifest(uri, progress=False)
    assert ray_.exit_code == threads.exit_code == 1
    assert (ray_.tiles, ray_.observations) == (threads.tiles, threads.observations) == (len(rows), 3 * len(rows))
    assert normalized_rejects(ray_.bad) == normalized_rejects(threads.bad)
    assert {Reason.DUPLICATE_TILE_ID, Reason.DUPLICATE_OBS_ID} <= set(ray_.reasons())

    proc = run_job("validate_manifest.py", uri, "--report", str(tmp_path / "r.csv"), "--no-progress")
    assert proc.returncode == 1, proc.stderr
    report = list(csv.DictReader((tmp_path / "r.csv").read_text().splitlines()))
    assert normalized_rejects([(r["id"], r["reason"], r["detail"]) for r in report]) == normalized_rejects(threads.bad)
    for reason, n in threads.reasons().items():
        assert f"  {reason}: {n}\n" in proc.stdout

    # A corrupted shard that is not the first (found by a task, not on the driver): unusable input.
    shards = sorted((tmp_path / "bad").glob("*.parquet"))
    assert len(shards) >= 3
    shards[2].write_bytes(shards[2].read_bytes()[:100])
    proc = run_job("validate_manifest.py", uri, "--no-progress")
    assert proc.returncode == 2 and f"{shards[2].name} is not a Parquet file" in proc.stderr, proc.stderr
    # A garbage street view in a manifest the builder made (it does not decode street views).
    info = synthetic.write_reference_layout(str(tmp_path / "in"), groups=2, bad=True)
    built = manifest_ray.build_from_folders(info["root"], str(tmp_path / "m"), progress=False)
    report = manifest_ray.validate_manifest(built.manifest_uri, required_bands=["B2"], progress=False)
    assert report.exit_code == 1 and [(i, r) for i, r, _ in report.bad] == [("bad-garbage-jpeg", Reason.SV_UNDECODABLE)]
