from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from gair.data import decode, manifest, synthetic
from gair.data.decode import Reason
from tests.data.conftest import (
    BAD_ROW_CORPUS,
    bad_row,
    good_row,
    manifest_content,
    normalized_rejects,
    tile_centre_lonlat,
    write_rows,
)

REPO = Path(__file__).resolve().parents[2]


def run_job(script: str, *args: str) -> subprocess.CompletedProcess:
    """Run a job's main() in this process (a subprocess costs seconds of imports), capturing its output."""
    import contextlib
    import importlib.util
    import io

    spec = importlib.util.spec_from_file_location(f"job_{Path(script).stem}", REPO / "jobs" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = module.main(list(args))
    return subprocess.CompletedProcess([script, *args], rc, out.getvalue(), err.getvalue())


def test_jobs_run_as_scripts_with_help() -> None:
    for script in ("validate_manifest.py",):  # one subprocess: each costs seconds of imports
        proc = subprocess.run(
            [sys.executable, str(REPO / "jobs" / script), "--help"], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stderr


def test_writer_shards_and_row_groups(tmp_path: Path) -> None:
    rows = [good_row(i, obs=2, tile_size=24) for i in range(7)]
    uri = write_rows(str(tmp_path / "m"), rows, rows_per_shard=3, row_group_rows=2)
    shards = sorted((tmp_path / "m").glob("part-*.parquet"))
    assert [pq.ParquetFile(s).metadata.num_rows for s in shards] == [3, 3, 1]
    assert all(pq.ParquetFile(s).metadata.row_group(0).num_rows <= 2 for s in shards)
    back = [r for batch in manifest.iter_manifest_rows(uri) for r in batch]
    assert [r["tile_id"] for r in back] == [r["tile_id"] for r in rows]
    assert back[0]["observations"][0]["sv_bytes"] == rows[0]["observations"][0]["sv_bytes"]


def test_writer_caps_row_groups_by_bytes(tmp_path: Path) -> None:
    rows = [good_row(i, obs=2, tile_size=24) for i in range(4)]
    write_rows(str(tmp_path / "m"), rows, row_group_rows=100, row_group_bytes=1)
    assert pq.ParquetFile(next((tmp_path / "m").glob("*.parquet"))).metadata.num_row_groups == 4


def test_writer_refuses_to_mix_with_existing_shards(tmp_path: Path) -> None:
    write_rows(str(tmp_path / "m"), [good_row(0)])
    with pytest.raises(FileExistsError):
        manifest.ManifestWriter(str(tmp_path / "m"))


def _reference_layout(root: Path, tiles: list[Path]) -> dict[str, str]:
    """Two groups of real UTM tiles; street views inside, one outside every tile, one without metadata."""
    expected = {}
    rng = np.random.default_rng(0)
    for g, tile in enumerate(tiles):
        (root / "rs_data" / f"g{g}").mkdir(parents=True)
        shutil.copy(tile, root / "rs_data" / f"g{g}" / tile.name)
        (root / "images" / f"g{g}").mkdir(parents=True)
        centre = tile_centre_lonlat(tile)
        for j in range(3):
            uuid = f"g{g}-sv{j}"
            lonlat = centre + (rng.uniform(-0.004, 0.004, 2) if j < 2 else np.array([2.0, 0.0]))
            (root / "images" / f"g{g}" / f"{uuid}.jpg").write_bytes(decode.encode_jpeg(synthetic.render_sv(rng, j, 32)))
            (root / "image_meta_data").mkdir(exist_ok=True)
            (root / "image_meta_data" / f"{uuid}.json").write_text(
                json.dumps({"lon": lonlat[0], "lat": lonlat[1], "year": 2020})
            )
            expected[uuid] = "kept" if j < 2 else Reason.OBS_OUTSIDE_TILE
    (root / "images" / "g0" / "orphan.jpg").write_bytes(b"x")
    expected["orphan"] = "missing_metadata"
    return expected


@pytest.mark.parametrize("inline", [True, False])
def test_build_from_folders_with_real_tiles(tmp_path: Path, real_tiles, inline: bool) -> None:
    expected = _reference_layout(tmp_path / "root", real_tiles[:2])
    result = manifest.build_from_folders(
        str(tmp_path / "root"), str(tmp_path / "m"), inline=inline, workers=2, log=None
    )
    assert result.tiles == 2 and result.observations == 4
    assert {i: r for i, r, _ in result.rejected} == {k: v for k, v in expected.items() if v != "kept"}
    rows = [r for b in manifest.iter_manifest_rows(result.manifest_uri) for r in b]
    assert all(r["crs"].startswith("EPSG:32") and len(r["band_names"]) == 12 for r in rows)
    assert all((r["rs_bytes"] is not None) == inline for r in rows)
    assert manifest.validate_manifest(result.manifest_uri).exit_code == 0


def test_build_manifest_job_from_csv_table(tmp_path: Path, real_tiles) -> None:
    rng = np.random.default_rng(1)
    lines = [["sv", "lon", "lat", "rs"]]
    for i, tile in enumerate(real_tiles[:3]):
        c = tile_centre_lonlat(tile)
        sv = tmp_path / f"sv{i}.jpg"
        sv.write_bytes(decode.encode_jpeg(synthetic.render_sv(rng, i, 32)))
        lines.append([sv.name, c[0], c[1], str(tile)])  # relative SV path, absolute RS path
    lines.append(["sv0.jpg", -170.0, 89.0, str(real_tiles[0])])  # far outside its tile
    with open(tmp_path / "pairs.csv", "w", newline="") as f:
        csv.writer(f).writerows(lines)
    proc = run_job("build_manifest.py", "--table", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "m"),
                   "--rejects", str(tmp_path / "rej.csv"), "--workers", "2", "--engine", "threads")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "3 tiles, 3 observations, 1 rejected" in proc.stdout and f"  {Reason.OBS_OUTSIDE_TILE}: 1" in proc.stdout
    rejects = list(csv.DictReader((tmp_path / "rej.csv").read_text().splitlines()))
    assert [r["reason"] for r in rejects] == [Reason.OBS_OUTSIDE_TILE]


def test_build_manifest_job_unusable_input(tmp_path: Path) -> None:
    # The default (Ray Data) engine reads the input before it starts Ray: bad input fails fast.
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    for engine in ("ray", "threads"):
        proc = run_job("build_manifest.py", "--table", str(tmp_path / "t.csv"), "--out", str(tmp_path / "m"),
                       "--engine", engine)  # fmt: skip
        assert proc.returncode == 2 and "lacks columns" in proc.stderr
        proc = run_job("build_manifest.py", "--folders", str(tmp_path / "nothing"), "--out", str(tmp_path / "m"),
                       "--engine", engine)  # fmt: skip
        assert proc.returncode == 2 and "nothing is not a directory" in proc.stderr, proc.stderr


def test_validate_job_exit_codes_and_report(tmp_path: Path, synthetic_manifest: str) -> None:
    assert (
        run_job("validate_manifest.py", synthetic_manifest, "--bands", "B2,B3", "--engine", "threads").returncode == 0
    )

    dup = good_row(0)
    rows = [good_row(0), dup, *[bad_row(k) for k, _, _ in BAD_ROW_CORPUS]]
    write_rows(str(tmp_path / "bad"), rows)
    proc = run_job("validate_manifest.py", str(tmp_path / "bad"), "--report", str(tmp_path / "r.csv"), "--engine",
                   "threads")  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    report = list(csv.DictReader((tmp_path / "r.csv").read_text().splitlines()))
    got = {(r["id"].rsplit("-o", 1)[0], r["reason"]) for r in report}
    for kind, _, reason in BAD_ROW_CORPUS:
        assert (f"bad-{kind}", reason) in got, kind
    assert {r["reason"] for r in report} >= {Reason.DUPLICATE_TILE_ID, Reason.DUPLICATE_OBS_ID}
    assert len(report) == len(BAD_ROW_CORPUS) + 1 + 3  # + duplicate tile + its 3 duplicate observations

    # Unusable input: found on the driver by the default (Ray Data) engine too, before Ray starts.
    (tmp_path / "notparquet").mkdir()
    (tmp_path / "notparquet" / "part-0.parquet").write_text("hello")
    proc = run_job("validate_manifest.py", str(tmp_path / "notparquet"), "--report", str(tmp_path / "r2.csv"))
    assert proc.returncode == 2 and "not a Parquet file" in proc.stderr
    pq.write_table(pq.read_table(str(tmp_path / "bad")).drop_columns(["observations"]), tmp_path / "wrong.parquet")
    proc = run_job("validate_manifest.py", str(tmp_path / "wrong.parquet"))
    assert proc.returncode == 2 and "missing column 'observations'" in proc.stderr
    assert run_job("validate_manifest.py", str(tmp_path / "missing")).returncode == 2


def test_ray_builder_task_body_matches_the_threaded_builder(tmp_path: Path) -> None:
    """The Ray Data builder's map_batches body called directly (no Ray): the threaded builder's rows and rejects."""
    from gair.data import manifest_ray

    info = synthetic.write_reference_layout(str(tmp_path / "in"), groups=4, tiles_per_group=2, obs_per_tile=2, bad=True)
    threads = manifest.build_from_folders(info["root"], str(tmp_path / "t"), workers=2, log=None)
    plan = manifest.plan_folders(info["root"])
    chunks = manifest_ray.chunk_units(manifest_ray.folder_units(plan), 3)
    assert len(chunks) == 3 and [c.num_rows for c in chunks] == [2, 2, 1]  # groups of 2 tiles, + the garbage tile
    manifest.prepare_output(str(tmp_path / "r"))
    kwargs = {"out_uri": str(tmp_path / "r"), "inline": True, "s3": None, "writer_kwargs": {}, "threads": 2}
    out = [r for c in chunks for r in manifest_ray.build_chunks(c, **kwargs).to_pylist()]
    assert [o["chunk"] for o in out] == [0, 1, 2] and sum(o["tiles"] for o in out) == threads.tiles == 8
    assert sum(o["observations"] for o in out) == threads.observations
    rejected = plan.rejected + [(r["id"], r["reason"], r["detail"]) for o in out for r in o["rejected"]]
    assert normalized_rejects(rejected) == normalized_rejects(threads.rejected)
    assert manifest_content(str(tmp_path / "r")) == manifest_content(threads.manifest_uri)
    assert sorted(p.name for p in (tmp_path / "r").glob("*.parquet")) == [
        f"part-0000{k}-00000.parquet" for k in range(2)
    ]
