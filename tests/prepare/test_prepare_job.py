"""End to end: `python jobs/prepare_tiles.py` on the synthetic scenario, scenes and output on S3.

The module's run is the real crash-and-resume path on a `ray start --head` cluster: the
first run (a plain driver) is SIGKILLed by fault injection after two shards (one cell per
shard), the same job submitted with `ray job submit` finishes the others; every check below
reads the resumed output.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from gair import geo
from gair.data import decode, storage
from gair.prepare.driver import FAULT_ENV
from tests.conftest import REPO_ROOT, ray_head_cluster
from tests.prepare.conftest import EXPECTED, MIN_OBS, Scenario, scene_spec, scene_values_at

SHARDS = sum(1 for v in EXPECTED.values() if v[5] != "too_few_obs")  # one cell per shard
KILL_AFTER = 2


@pytest.fixture(scope="module")
def ray_head_2_cpus():
    """(GCS address, dashboard address, env) of a `ray start --head` cluster with 2 CPUs (token auth on).

    One cluster for both runs: the killed driver takes only itself down, as on a real cluster.
    """
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    for attempt in range(3):
        # On a busy machine the raylet may give up on its agents' port files (a fixed 15 s in
        # Ray 2.60) and `ray start` fails: start again (the failed attempt's processes are stopped).
        prefix = f"gpt{os.getpid()}x{attempt}-"
        try:
            with ray_head_cluster(prefix, env) as cluster:
                yield cluster
            return
        except subprocess.CalledProcessError:
            for pid in subprocess.run(["pgrep", "-f", f"/tmp/{prefix}"], capture_output=True, text=True).stdout.split():
                subprocess.run(["kill", "-9", pid], capture_output=True)
            if attempt == 2:
                raise


def run_driver(sets: list[str], env: dict[str, str], extra_env: dict[str, str]) -> subprocess.CompletedProcess:
    """`python jobs/prepare_tiles.py` as a driver joining the cluster of RAY_ADDRESS."""
    cmd = [sys.executable, "jobs/prepare_tiles.py", *[a for s in sets for a in ("--set", s)]]
    env = {**env, "PYTHONUNBUFFERED": "1", **extra_env}
    return subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)


def submit_job(sets: list[str], address: str, env: dict[str, str]) -> str:
    """`ray job submit --working-dir . -- python jobs/prepare_tiles.py ...`; returns the job's output."""
    aws = {k: v for k, v in env.items() if k.startswith("AWS_")}  # the S3 server of the test session
    runtime_env = {"env_vars": aws, "excludes": ["runs/", "mlflow.db", ".git/", "*.egg-info/", "bench/"]}
    cmd = [
        sys.executable, "-m", "ray.scripts.scripts", "job", "submit", "--address", address, "--working-dir", ".",
        "--runtime-env-json", json.dumps(runtime_env), "--", "python", "jobs/prepare_tiles.py",
        *[a for s in sets for a in ("--set", s)],
    ]  # fmt: skip
    for _ in range(20):  # the dashboard answers before its job agent is up
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
        output = proc.stdout + proc.stderr
        if "No available agent" not in output:
            break
        time.sleep(3)
    assert proc.returncode == 0 and "succeeded" in output, output[-6000:]
    return output


def records(out: str) -> dict[str, dict]:
    fs, path = storage.resolve(storage.join(out, "_shards"))
    fs.handler.fs.invalidate_cache(path)  # s3fs caches listings; the job wrote records since the last one
    from pyarrow.fs import FileSelector

    found = {}
    for info in fs.get_file_info(FileSelector(path, allow_not_found=True)):
        with fs.open_input_stream(info.path) as f:
            found[info.path.rsplit("/", 1)[-1]] = json.loads(f.read())
    return found


@pytest.fixture(scope="module")
def prepared(s2_scenario: Scenario, ray_head_2_cpus):
    """(out URI, records after the killed run, records after the rerun, rerun output).

    The first run is a plain driver on the cluster, SIGKILLed by fault injection after two
    shards; the rerun goes through `ray job submit`, as on a real cluster.
    """
    _, dashboard, env = ray_head_2_cpus
    env = {k: v for k, v in env.items() if k != FAULT_ENV}
    out = s2_scenario.root.replace("/input", "/prepared")
    sets = [
        f"street_views={s2_scenario.street_views}", f"stac={s2_scenario.stac}", f"out={out}",
        "tile_size_m=1000", f"min_obs={MIN_OBS}", "resampling=nearest", "cells_per_shard=1", "concurrency=1",
        "num_cpus_per_task=0.5",
    ]  # fmt: skip
    killed = run_driver(sets, env, {FAULT_ENV: str(KILL_AFTER)})
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr[-4000:]
    after_kill = records(out)
    output = submit_job(sets, dashboard, env)
    return out, after_kill, records(out), output


def manifest_rows(out: str) -> list[dict]:
    fs, _ = storage.resolve(out)
    rows = []
    for path in storage.list_parquet(storage.join(out, "manifest")):
        rows += pq.read_table(path, filesystem=fs).to_pylist()
    return rows


def test_killed_run_resumes_without_redoing_finished_shards(prepared):
    out, after_kill, final, output = prepared
    assert KILL_AFTER <= len(after_kill) < SHARDS  # the kill left work to do
    assert len(final) == SHARDS
    for name, rec in after_kill.items():  # finished shards were not cut again
        assert final[name]["attempt"] == rec["attempt"]
    summary = json.loads(storage.read_bytes(storage.join(out, "summary.json")))
    assert summary["shards_resumed"] == len(after_kill)
    assert f"{len(after_kill)} already complete, {SHARDS - len(after_kill)} to cut" in output


def test_cells_and_rejections_with_reasons(prepared):
    out, *_ = prepared
    summary = json.loads(storage.read_bytes(storage.join(out, "summary.json")))
    tiles_expected = [c for c, v in EXPECTED.items() if v[5].startswith("S2")]
    assert summary["cells"] == len(EXPECTED)
    assert summary["cells_skipped_min_obs"] == 1
    assert summary["tiles"] == len(tiles_expected)
    assert summary["observations_kept"] == sum(EXPECTED[c][3] for c in tiles_expected)
    assert summary["rejected"] == {"cloudy": 1, "lonlat_nan": 1, "no_scene": 1, "nodata": 1, "too_few_obs": 1}
    rejects = list(csv.DictReader(io.StringIO(storage.read_bytes(storage.join(out, "rejects.csv")).decode())))
    by_id = {r["id"]: r for r in rejects}
    for cell_id, v in EXPECTED.items():
        if not v[5].startswith("S2"):
            assert by_id[cell_id]["reason"] == v[5], by_id[cell_id]
    assert by_id["32633_1000m_500_4999"]["detail"].startswith("scene S2A_33_20240605: no data 0.300")
    assert by_id["sv-nowhere"]["reason"] == "no_scene" and by_id["sv-nolat"]["reason"] == "lonlat_nan"


def test_tiles_keep_the_scene_crs_transform_and_band_order(prepared):
    out, *_ = prepared
    rows = manifest_rows(out)
    assert sorted(r["tile_id"] for r in rows) == sorted(c for c, v in EXPECTED.items() if v[5].startswith("S2"))
    for row in rows:
        epsg, ix, iy, n, _, scene_id = EXPECTED[row["tile_id"]]
        spec = scene_spec(scene_id)
        image, info = decode.decode_geotiff(row["rs_bytes"])
        assert row["crs"] == info.crs == spec.crs
        assert tuple(row["transform"]) == info.transform == (10.0, 0.0, ix * 1000.0, 0.0, -10.0, (iy + 1) * 1000.0)
        assert (row["width"], row["height"]) == (100, 100) and image.shape == (12, 100, 100)
        from rasterio.io import MemoryFile

        with MemoryFile(row["rs_bytes"]) as mem, mem.open() as src:
            assert src.tags()["GAIR_SCENE_ID"] == scene_id  # the expected scene was chosen
            assert list(src.descriptions) == row["band_names"]
        # Every band, every pixel: the scene's value at the pixel centre (nearest resampling).
        cols, rows_ = np.meshgrid(np.arange(100) + 0.5, np.arange(100) + 0.5)
        xs, ys = ix * 1000.0 + 10 * cols, (iy + 1) * 1000.0 - 10 * rows_
        for b, band in enumerate(row["band_names"]):
            np.testing.assert_array_equal(image[b], scene_values_at(spec, band, xs, ys), err_msg=band)
        assert len(row["observations"]) == n


def test_street_views_land_at_the_right_pixel(prepared):
    from rasterio.warp import transform as warp_transform

    out, *_ = prepared
    for row in manifest_rows(out):
        spec = scene_spec(EXPECTED[row["tile_id"]][5])
        image, _ = decode.decode_geotiff(row["rs_bytes"])
        lonlat = np.array([[o["lon"], o["lat"]] for o in row["observations"]])
        xy = geo.lonlat_to_xy(lonlat, row["crs"], row["transform"], row["width"], row["height"])
        assert geo.inside(xy).all()
        np.testing.assert_allclose(
            geo.xy_to_lonlat(xy, row["crs"], row["transform"], row["width"], row["height"]), lonlat, atol=1e-9
        )
        col = np.floor((xy[:, 0] + 1) / 2 * row["width"]).astype(int)
        line = np.floor((xy[:, 1] + 1) / 2 * row["height"]).astype(int)
        xs, ys = warp_transform("EPSG:4326", row["crs"], lonlat[:, 0].tolist(), lonlat[:, 1].tolist())
        b2 = row["band_names"].index("B2")
        expected = scene_values_at(spec, "B2", np.asarray(xs), np.asarray(ys))
        np.testing.assert_array_equal(image[b2][line, col], expected)
        inputs = out.rsplit("/prepared", 1)[0] + "/input/sv/images/"  # the table's relative paths, made absolute
        assert all(o["sv_uri"].startswith(inputs) and o["sv_bytes"] is None for o in row["observations"])


def test_manifest_validates(prepared, tmp_path):
    out, *_ = prepared
    sys.path.insert(0, str(REPO_ROOT / "jobs"))
    import validate_manifest

    report = tmp_path / "report.csv"
    assert validate_manifest.main([storage.join(out, "manifest"), "--report", str(report)]) == 0
    assert report.read_text().strip() == "id,reason,detail"


@pytest.mark.slow
def test_manifest_trains_with_the_smoke_config(prepared, ray_head_2_cpus, tmp_path):
    out, *_ = prepared
    sets = [
        f"data.train_manifest={storage.join(out, 'manifest')}", "data.batch_size=2", "train.max_steps=2",
        "train.num_workers=1", "train.checkpoint_every=2", "train.log_every=1", f"run.storage_path={tmp_path / 'runs'}",
        "run.name=prepared-smoke", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "mlflow.experiment=prepared-smoke", "mlflow.registered_model=gair-prepared-smoke",
    ]  # fmt: skip
    env = {k: v for k, v in ray_head_2_cpus[2].items() if k not in ("MLFLOW_TRACKING_URI", FAULT_ENV)}
    env["PYTHONUNBUFFERED"] = "1"
    cmd = [sys.executable, "jobs/pretrain.py", "--config", "configs/pretrain_smoke.yaml"]
    proc = subprocess.run(cmd + [a for s in sets for a in ("--set", s)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert "step 2/2" in output, output[-3000:]
    Path(tmp_path / "output.log").write_text(output)
