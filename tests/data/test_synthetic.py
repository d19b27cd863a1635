from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from gair import geo
from gair.data import decode, manifest, synthetic
from tests.data.test_manifest import run_job


def _rows(uri: str) -> list[dict]:
    return [r for b in manifest.iter_manifest_rows(uri) for r in b]


def test_same_seed_same_bytes_other_seed_other_data(tmp_path: Path) -> None:
    kw = dict(tiles=4, obs_per_tile=3, tile_size=32, sv_size=32)
    a = pq.read_table(synthetic.write_synthetic(str(tmp_path / "a"), seed=5, **kw))
    b = pq.read_table(synthetic.write_synthetic(str(tmp_path / "b"), seed=5, **kw))
    c = pq.read_table(synthetic.write_synthetic(str(tmp_path / "c"), seed=6, **kw))
    assert a.equals(b)
    assert not a.column("rs_bytes").equals(c.column("rs_bytes"))


def test_shapes_crs_mix_and_validity(synthetic_manifest: str) -> None:
    rows = _rows(synthetic_manifest)
    assert len(rows) == 16 and all(len(r["observations"]) == 4 for r in rows)
    crss = {r["crs"] for r in rows}
    assert "EPSG:4326" in crss and any(c.startswith("EPSG:32") for c in crss)
    image, info = decode.decode_geotiff(rows[0]["rs_bytes"])
    assert image.shape == (12, 48, 48) and image.dtype == np.uint16
    assert any(r["width"] != r["height"] for r in rows)  # the EPSG:4326 tiles are not square
    assert decode.decode_jpeg(rows[0]["observations"][0]["sv_bytes"]).shape == (40, 40, 3)
    assert manifest.validate_manifest(synthetic_manifest).exit_code == 0


def test_planted_relation_sv_is_predictable_from_rs_at_its_location(synthetic_manifest: str) -> None:
    """The class read off the RS spectrum at the SV's location predicts what the SV looks like."""
    sv_templates = synthetic.SV_COLOURS.mean(axis=1)  # (classes, 3) mean colour of each class
    agree, total, mixed_tiles = 0, 0, 0
    for row in _rows(synthetic_manifest):
        image, _ = decode.decode_geotiff(row["rs_bytes"])
        info = decode.check_georeference(row)
        lonlat = np.array([[o["lon"], o["lat"]] for o in row["observations"]])
        xy = geo.lonlat_to_xy(lonlat, info.crs, info.transform, info.width, info.height)
        cols = ((xy[:, 0] + 1) * info.width / 2).astype(int)
        rows_ = ((xy[:, 1] + 1) * info.height / 2).astype(int)
        classes = set()
        for o, c, r in zip(row["observations"], cols, rows_, strict=True):
            spectrum = image[:, r, c].astype(np.float32)
            rs_class = int(np.argmin(np.linalg.norm(synthetic.SIGNATURES - spectrum, axis=1)))
            sv_mean = decode.decode_jpeg(o["sv_bytes"]).reshape(-1, 3).mean(0)
            sv_class = int(np.argmin(np.linalg.norm(sv_templates - sv_mean, axis=1)))
            assert json.loads(o["meta_json"])["class"] == rs_class
            agree += rs_class == sv_class
            total += 1
            classes.add(rs_class)
        mixed_tiles += len(classes) > 1
    assert agree / total > 0.8, f"{agree}/{total}"
    assert mixed_tiles >= 4  # the relation is local: one tile holds several classes


def test_make_synthetic_job_by_reference(tmp_path: Path) -> None:
    proc = run_job("make_synthetic.py", "--out", str(tmp_path / "s"), "--tiles", "3", "--obs-per-tile", "2",
                   "--seed", "1", "--tile-size", "32", "--sv-size", "32", "--by-reference")  # fmt: skip
    assert proc.returncode == 0 and "wrote 3 tiles" in proc.stdout
    assert "[synthetic]" in proc.stderr  # progress output
    rows = _rows(str(tmp_path / "s" / "manifest"))
    assert all(r["rs_bytes"] is None and Path(r["rs_uri"]).is_file() for r in rows)
    assert manifest.validate_manifest(str(tmp_path / "s" / "manifest")).exit_code == 0
    assert run_job("make_synthetic.py", "--out", str(tmp_path / "x"), "--tiles", "0").returncode == 2
