"""gair.eval.runner end to end on a local Ray cluster: every task on small inputs, bad inputs.

No MLflow here (mlflow.enabled=false); tests/eval/test_evaluate_job.py covers MLflow and S3.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gair.configs import load_config
from gair.configs.eval import EvalConfig
from gair.data import schema, synthetic
from gair.eval.retrieval import EmptyManifestError
from gair.eval.runner import run_evaluation
from gair.eval.tables import CSVInputError


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> dict[str, str]:
    root = tmp_path_factory.mktemp("eval-inputs")
    manifest = synthetic.write_synthetic(
        str(root / "heldout"), tiles=6, obs_per_tile=3, seed=11, tile_size=48, sv_size=32, rows_per_shard=2
    )
    # RS probe: the 20 real tiles, labelled by hemisphere (a real, if tiny, task).
    import pandas as pd

    index = pd.read_csv(shared_data / "satclip-s2" / "index.csv")
    rs_csv = root / "rs.csv"
    pd.DataFrame(
        {
            "uri": [str(shared_data / "satclip-s2" / "images" / f) for f in index["fn"]],
            "label": (index["lat"] > 0).map({True: "north", False: "south"}),
        }
    ).to_csv(rs_csv, index=False)
    # SV probe: synthetic street views written as files (relative paths), class labels.
    tiles = [synthetic.make_tile(12, i, obs_per_tile=4, tile_size=32, sv_size=32) for i in range(8)]
    (root / "sv").mkdir()
    recs = []
    for t in tiles:
        for o in t["obs"]:
            (root / "sv" / f"{o['obs_id']}.jpg").write_bytes(synthetic.decode.encode_jpeg(o["image"]))
            recs.append({"uri": f"sv/{o['obs_id']}.jpg", "target": o["class"]})
    sv_csv = root / "sv.csv"
    df = pd.DataFrame(recs)
    keep = df["target"].map(df["target"].value_counts()) >= 3  # stratified 3-fold needs 3 per class
    df[keep].to_csv(sv_csv, index=False)
    return {
        "root": str(root),
        "manifest": manifest,
        "rs_csv": str(rs_csv),
        "sv_csv": str(sv_csv),
        "stations": str(shared_data / "satclip-s2" / "air_temperature_stations.csv"),
    }


def _cfg(inputs: dict, tiny_export: Path, out: Path, *sets: str) -> EvalConfig:
    base = [
        f"model={tiny_export}", f"retrieval.manifest={inputs['manifest']}", f"location.csv={inputs['stations']}",
        "location.probe.k_folds=3", "location.map_resolution_deg=10", f"report.output_dir={out}", "mlflow.enabled=false",
        "extract.num_workers=1", "extract.batch_size=4", "retrieval.examples=2",
    ]  # fmt: skip
    return load_config(EvalConfig, None, [*base, *sets])


@pytest.mark.slow  # about 50 s on 2 cores: every task, the real tiles and the 3,076 stations
def test_all_tasks(ray_start_2_cpus, inputs: dict, tiny_export: Path, tmp_path: Path):
    cfg = _cfg(
        inputs, tiny_export, tmp_path,
        "rs_probe.enabled=true", f"rs_probe.csv={inputs['rs_csv']}", "rs_probe.probe.k_folds=3",
        "sv_probe.enabled=true", f"sv_probe.csv={inputs['sv_csv']}", "sv_probe.probe.k_folds=3",
    )  # fmt: skip
    out = run_evaluation(cfg, stream=None)
    r = out.results
    assert r.retrieval.n_queries == 18 and r.retrieval.n_tiles == 6
    assert set(r.retrieval.metrics) == {"nili", "bilinear", "global"}
    assert r.retrieval.chance["recall@1"] == pytest.approx(1 / 18)
    assert r.location.n_points == 3076
    assert r.rs_probe.n == 20 and 0 <= r.rs_probe.gair.metrics["accuracy"] <= 1
    assert r.sv_probe.task == "classification" and r.sv_probe.majority is not None
    files = {p.name for p in tmp_path.iterdir()}
    assert {
        "report.md",
        "metrics.json",
        "retrieval_examples.png",
        "location_world_map.png",
        "location_pred_vs_true.png",
    } <= files
    text = (tmp_path / "report.md").read_text()
    for needle in (
        "NILI at the SV location",
        "chance",
        "raw (lon, lat)",
        "per-band mean/std",
        "8x8 RGB thumbnail",
        "majority class",
    ):
        assert needle in text
    metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    assert "retrieval.nili.recall_at_10" in metrics and "location.gair.r2" in metrics


def test_sv_regression(ray_start_2_cpus, inputs: dict, tiny_export: Path, tmp_path: Path):
    cfg = _cfg(
        inputs, tiny_export, tmp_path, "retrieval.enabled=false", "location.enabled=false",
        "sv_probe.enabled=true", f"sv_probe.csv={inputs['sv_csv']}", "sv_probe.task=regression", "sv_probe.probe.k_folds=3",
    )  # fmt: skip
    res = run_evaluation(cfg, stream=None).results.sv_probe
    assert res.task == "regression" and "r2" in res.gair.metrics
    assert (tmp_path / "sv_probe_pred_vs_true.png").is_file()


def test_empty_manifests_fail_clearly(ray_start_2_cpus, inputs: dict, tiny_export: Path, tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    pq.write_table(pa.Table.from_pylist([], schema=schema.MANIFEST_SCHEMA), empty / "part-00000.parquet")
    with pytest.raises(EmptyManifestError, match="has no tiles"):
        run_evaluation(
            _cfg(inputs, tiny_export, tmp_path, f"retrieval.manifest={empty}", "location.enabled=false"), stream=None
        )
    with pytest.raises(EmptyManifestError, match="does not exist"):
        run_evaluation(
            _cfg(inputs, tiny_export, tmp_path, f"retrieval.manifest={tmp_path}/nope", "location.enabled=false"),
            stream=None,
        )
    no_obs = tmp_path / "no-obs"
    rows = [
        synthetic.tile_to_row(synthetic.make_tile(3, i, obs_per_tile=0, tile_size=32, sv_size=32)) for i in range(2)
    ]
    with synthetic.manifest.ManifestWriter(str(no_obs)) as w:
        w.write_many(rows)
    with pytest.raises(EmptyManifestError, match="no usable street-view observations"):
        run_evaluation(
            _cfg(inputs, tiny_export, tmp_path, f"retrieval.manifest={no_obs}", "location.enabled=false"), stream=None
        )


def test_bad_probe_csvs_fail_clearly(ray_start_2_cpus, inputs: dict, tiny_export: Path, tmp_path: Path):
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\na.tif,x\n")
    cfg = _cfg(
        inputs,
        tiny_export,
        tmp_path,
        "retrieval.enabled=false",
        "location.enabled=false",
        "rs_probe.enabled=true",
        f"rs_probe.csv={bad}",
    )
    with pytest.raises(CSVInputError, match=r"lacks column\(s\) \['uri'\]"):
        run_evaluation(cfg, stream=None)
    missing = tmp_path / "missing.csv"
    missing.write_text("uri,label\n" + "".join(f"/nonexistent/{i}.tif,{i % 2}\n" for i in range(10)))
    from gair.eval.image_probes import ImageLoadError

    cfg = _cfg(
        inputs,
        tiny_export,
        tmp_path,
        "retrieval.enabled=false",
        "location.enabled=false",
        "rs_probe.enabled=true",
        f"rs_probe.csv={missing}",
    )
    with pytest.raises(ImageLoadError, match="10 of 10 images could not be read: /nonexistent/0.tif"):
        run_evaluation(cfg, stream=None)
