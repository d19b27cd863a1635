"""End to end: a smoke pretraining run registers a model in MLflow; ``jobs/evaluate.py`` evaluates
``models:/NAME@current`` on a held-out synthetic manifest on S3 and logs a linked run.

Everything runs on loopback: a moto S3 server, an MLflow server (sqlite backend) and a
local 2-CPU Ray cluster. The pretraining run (configs/pretrain_smoke.yaml, tiny model,
2 workers under ZeRO-2) trains for ``STEPS`` steps on ``TRAIN_TILES`` synthetic tiles: the
48-tile, 12-step smoke default memorises its tiles and does not beat an untrained model
on held-out tiles, so this fixture trains longer on more tiles (about 2-4 minutes on
2 cores).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from gair.configs import load_config
from gair.configs.eval import EvalConfig
from gair.configs.train import PretrainConfig
from gair.data import synthetic
from tests.conftest import REPO_ROOT
from tests.eval.conftest import export_tiny

pytestmark = pytest.mark.slow

STEPS = 150
TRAIN_TILES, HELDOUT_TILES, OBS_PER_TILE = 256, 48, 4
TILE_PX, SV_PX = 32, 32  # the smoke model's input sizes: decoding needs no resize


@pytest.fixture(scope="module")
def s3_data(s3_server: str) -> dict[str, str]:
    import boto3

    bucket = f"gair-eval-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
    kw = {"obs_per_tile": OBS_PER_TILE, "tile_size": TILE_PX, "sv_size": SV_PX}
    train = synthetic.write_synthetic(f"s3://{bucket}/train", tiles=TRAIN_TILES, seed=0, **kw)
    heldout = synthetic.write_synthetic(f"s3://{bucket}/heldout", tiles=HELDOUT_TILES, seed=1, **kw)
    return {"bucket": bucket, "train": train, "heldout": heldout}


@pytest.fixture(scope="module")
def pretrained(s3_data: dict, mlflow_server: str, ray_start_2_cpus) -> dict:
    """The smoke pretraining run, registered as ``models:/<name>@current`` on the MLflow server."""
    from gair.train.trainer import run_pretraining

    name = f"evalsmoke-{uuid.uuid4().hex[:6]}"
    sets = [
        f"run.name={name}", f"run.storage_path=s3://{s3_data['bucket']}/runs", f"data.train_manifest={s3_data['train']}",
        f"train.max_steps={STEPS}", f"train.checkpoint_every={STEPS}", "train.log_every=25", "optim.warmup_steps=10",
        "data.num_decode_workers=2", f"mlflow.tracking_uri={mlflow_server}", f"mlflow.experiment=test-{name}",
        f"mlflow.registered_model=gair-{name}",
    ]  # fmt: skip
    cfg = load_config(PretrainConfig, REPO_ROOT / "configs" / "pretrain_smoke.yaml", sets)
    start = time.monotonic()
    result = run_pretraining(cfg)
    print(f"pretraining {STEPS} steps took {time.monotonic() - start:.0f}s")
    assert result.model_uri == f"models:/gair-{name}@current"
    return {"model_uri": result.model_uri, "run_id": result.mlflow_run_id, "name": name}


def _eval_sets(s3_data: dict, mlflow_server: str, out: Path, shared_data: Path) -> list[str]:
    return [
        f"retrieval.manifest={s3_data['heldout']}", "retrieval.modes=[nili,bilinear,global]",
        f"location.csv={shared_data / 'satclip-s2' / 'air_temperature_stations.csv'}",
        f"mlflow.tracking_uri={mlflow_server}", f"report.output_dir={out}",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def evaluated(pretrained: dict, s3_data: dict, mlflow_server: str, shared_data: Path, tmp_path_factory) -> dict:
    """``jobs/evaluate.py --model models:/NAME@current --config configs/eval_smoke.yaml`` (in-process)."""
    import json

    from jobs.evaluate import main

    out = tmp_path_factory.mktemp("eval-trained")
    argv = ["--model", pretrained["model_uri"], "--config", str(REPO_ROOT / "configs" / "eval_smoke.yaml")]
    for s in _eval_sets(s3_data, mlflow_server, out, shared_data):
        argv += ["--set", s]
    assert main(argv) == 0
    return {"out": out, "metrics": json.loads((out / "metrics.json").read_text())["metrics"]}


@pytest.fixture(scope="module")
def untrained_metrics(pretrained: dict, s3_data: dict, mlflow_server: str, shared_data: Path, tmp_path_factory) -> dict:
    """The same evaluation of a randomly initialised model of the same config (not logged)."""
    from gair.eval.runner import run_evaluation

    root = tmp_path_factory.mktemp("eval-untrained")
    export = export_tiny(root / "model", seed=1)
    sets = [*_eval_sets(s3_data, mlflow_server, root / "out", shared_data), f"model={export}", "mlflow.enabled=false"]
    cfg = load_config(EvalConfig, REPO_ROOT / "configs" / "eval_smoke.yaml", sets)
    return run_evaluation(cfg, stream=None).metrics


def test_trained_nili_retrieval_beats_chance_and_untrained(evaluated: dict, untrained_metrics: dict):
    m, u = evaluated["metrics"], untrained_metrics
    n = m["retrieval.n_queries"]
    assert n == HELDOUT_TILES * OBS_PER_TILE
    print(
        f"NILI median rank / R@10 of {n}: trained {m['retrieval.nili.median_rank']:.1f} / "
        f"{m['retrieval.nili.recall_at_10']:.3f}, untrained {u['retrieval.nili.median_rank']:.1f} / "
        f"{u['retrieval.nili.recall_at_10']:.3f}, chance {m['retrieval.chance.median_rank']:.1f} / "
        f"{m['retrieval.chance.recall_at_10']:.3f}"
    )
    assert m["retrieval.nili.median_rank"] < 0.8 * m["retrieval.chance.median_rank"]
    assert m["retrieval.nili.recall_at_10"] > m["retrieval.chance.recall_at_10"]
    assert m["retrieval.nili.median_rank"] < u["retrieval.nili.median_rank"]
    assert m["retrieval.nili.mean_rank"] < u["retrieval.nili.mean_rank"]


def test_eval_run_is_linked_to_the_training_run(evaluated: dict, pretrained: dict, mlflow_server: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server)
    source = client.get_run(pretrained["run_id"])
    runs = client.search_runs(
        [source.info.experiment_id], filter_string=f"tags.`gair.eval.source_run_id` = '{pretrained['run_id']}'"
    )
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["gair.eval.model_uri"] == pretrained["model_uri"]
    assert run.data.tags["mlflow.parentRunId"] == pretrained["run_id"]
    assert run.data.tags["gair.eval.model_version"] == "1"
    assert source.data.tags["gair.eval.last_run_id"] == run.info.run_id
    for key in ("retrieval.nili.recall_at_1", "retrieval.bilinear.median_rank", "retrieval.global.recall_at_10",
                "location.gair.r2", "location.raw_lonlat.rmse"):  # fmt: skip
        assert key in run.data.metrics, sorted(run.data.metrics)
    assert run.data.params["retrieval.manifest"].startswith("s3://")
    arts = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "eval")}
    assert {"report.md", "metrics.json", "retrieval_examples.png", "location_world_map.png",
            "location_pred_vs_true.png"} <= arts  # fmt: skip


def test_report_table(evaluated: dict):
    text = (evaluated["out"] / "report.md").read_text()
    assert "| NILI at the SV location |" in text and "| bilinear token sampling |" in text
    assert "| global RS embedding (tile mean) |" in text and "| chance |" in text
    assert "| GAIR location embedding |" in text and "| raw (lon, lat) |" in text
