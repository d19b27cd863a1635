"""jobs/embed.py: GeoParquet export on Ray Data that matches in-process embeddings; bad input exits 2."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO_ROOT
from tests.serving.conftest import reference_embeddings

sys.path.insert(0, str(REPO_ROOT / "jobs"))
import embed  # noqa: E402


def points_csv(ref: dict, path: Path) -> Path:
    """Every observation's location as a point, plus one point that no tile covers."""
    ids = sorted(ref)
    pd.DataFrame(
        {
            "id": [*ids, "nowhere"],
            "lon": [ref[i]["lonlat"][0] for i in ids] + [0.5],
            "lat": [ref[i]["lonlat"][1] for i in ids] + [0.5],
        }
    ).to_csv(path, index=False)
    return path


@pytest.mark.slow
def test_points_in_tiles_export(
    ray_start_2_cpus, mlflow_server: str, serving_export: Path, synthetic_files: dict, tmp_path: Path, capsys
):
    import geopandas as gpd
    from mlflow.tracking import MlflowClient

    ref = reference_embeddings(serving_export, synthetic_files["rows"])
    pts = points_csv(ref, tmp_path / "points.csv")
    out = tmp_path / "emb"
    experiment = f"test-embed-{uuid.uuid4().hex[:6]}"
    argv = ["--model", str(serving_export), "--points", str(pts), "--manifest", synthetic_files["manifest"],
            "--out", str(out), "--rows-per-shard", "4", "--tracking-uri", mlflow_server,
            "--experiment", experiment]  # fmt: skip
    assert embed.main(argv) == 0
    printed = capsys.readouterr().out
    assert "1 point(s) outside every tile" in printed and "nowhere: lon 0.500000, lat 0.500000" in printed

    assert len(list(out.glob("part-*.parquet"))) == 2  # 7 rows, 4 per shard
    gdf = gpd.read_parquet(out).set_index("id")
    assert gdf.crs.equals("OGC:CRS84") and len(gdf) == len(ref) + 1
    for obs_id, r in ref.items():
        row = gdf.loc[obs_id]
        assert row["tile_id"] == r["tile_id"] and row["error"] == ""
        assert (row.geometry.x, row.geometry.y) == tuple(r["lonlat"])
        np.testing.assert_allclose(row["location_embedding"], r["location_embedding"], atol=1e-5, rtol=0)
        np.testing.assert_allclose(row["rs_embedding"], r["rs_embedding"], atol=1e-5, rtol=0)
    far = gdf.loc["nowhere"]  # kept, with its location embedding, and flagged
    assert pd.isna(far["tile_id"]) and "no tile" in far["error"] and np.isnan(far["rs_embedding"]).all()
    assert np.isfinite(far["location_embedding"]).all()

    client = MlflowClient(mlflow_server)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert run.data.tags["gair.embed.output"] == str(out)
    assert run.data.metrics["points_outside_tiles"] == 1 and run.data.metrics["rows"] == len(ref) + 1
    assert {"embedding_map.png", "outside_points.csv", "summary.json"} <= {
        a.path for a in client.list_artifacts(run.info.run_id)
    }

    # Every observation of the manifest: SV and localized RS embeddings, same as training sees them.
    out2 = tmp_path / "obs"
    argv = ["--model", str(serving_export), "--manifest", synthetic_files["manifest"], "--observations",
            "--out", str(out2), "--no-mlflow"]  # fmt: skip
    assert embed.main(argv) == 0
    gdf = gpd.read_parquet(out2).set_index("id")
    assert sorted(gdf.index) == sorted(ref)
    for col in ("rs_embedding", "sv_embedding", "sv_projected", "location_embedding"):
        got = np.stack(gdf.loc[sorted(ref), col].to_numpy())
        np.testing.assert_allclose(got, np.stack([ref[i][col] for i in sorted(ref)]), atol=1e-5, rtol=0, err_msg=col)


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "give --points, --manifest or both"),
        (["--points", "{pts}", "--observations", "--manifest", "{manifest}"], "--observations goes with --manifest"),
        (["--points", "{bad}"], "needs columns lon and lat"),
        (["--points", "{missing}"], "not found"),
        (["--manifest", "{tmp}"], "holds no .parquet files"),
        (["--points", "{pts}", "--model-override", "{tmp}"], "does not exist"),
    ],
)
def test_bad_input_exits_2(extra, message, serving_export: Path, synthetic_files: dict, tmp_path: Path, capsys):
    pd.DataFrame({"x": [1.0], "y": [2.0]}).to_csv(tmp_path / "bad.csv", index=False)
    pd.DataFrame({"lon": [1.0], "lat": [2.0]}).to_csv(tmp_path / "pts.csv", index=False)
    model = str(serving_export)
    if "--model-override" in extra:
        model = str(tmp_path / "no-model")
        extra = extra[:2]
    fill = {"pts": tmp_path / "pts.csv", "bad": tmp_path / "bad.csv", "missing": tmp_path / "nope.csv",
            "manifest": synthetic_files["manifest"], "tmp": tmp_path}  # fmt: skip
    argv = ["--model", model, "--out", str(tmp_path / "out"), "--no-mlflow", *[a.format(**fill) for a in extra]]
    assert embed.main(argv) == 2
    assert message in capsys.readouterr().err


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as exc:
        embed.parse_args(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for action in embed.parse_args(["--model", "m", "--out", "o"]).__dict__:
        assert "--" + action.replace("_", "-") in text
