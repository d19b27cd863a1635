"""gair.train.trainer: driver-side helpers (checkpoint URIs, the model card, path resolution)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs
import pytest
from ray.train import Checkpoint

from gair.configs import load_config
from gair.configs.train import PretrainConfig
from gair.train import trainer


@pytest.mark.parametrize(
    "storage,path,expected",
    [
        ("s3://bucket/runs", "bucket/runs/r/checkpoint_1", "s3://bucket/runs/r/checkpoint_1"),
        ("gs://bucket/runs", "bucket/runs/r/checkpoint_1", "gs://bucket/runs/r/checkpoint_1"),
        ("/data/runs", "/data/runs/r/checkpoint_1", "/data/runs/r/checkpoint_1"),
    ],
)
def test_checkpoint_uri_keeps_the_storage_scheme(storage, path, expected):
    cfg = load_config(PretrainConfig, None, [f"run.storage_path={storage}"])
    # Ray hands out paths inside the storage filesystem, without its scheme.
    ckpt = Checkpoint(path, filesystem=pafs.LocalFileSystem())
    assert trainer.checkpoint_uri(cfg, ckpt) == expected


def test_local_paths_become_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    cfg = trainer.resolve_paths(load_config(PretrainConfig, None, ["run.storage_path=runs"]))
    assert cfg.run.storage_path == str(tmp_path / "runs") and Path(cfg.run.synthetic_dir).is_absolute()
    remote = trainer.resolve_paths(load_config(PretrainConfig, None, ["run.storage_path=s3://b/runs"]))
    assert remote.run.storage_path == "s3://b/runs"


def test_model_card_names_the_run_data_and_load_uri():
    cfg = load_config(
        PretrainConfig,
        None,
        ["data.train_manifest=s3://u:pw@host/m", "mlflow.registered_model=gm", "mlflow.alias=best", "run.name=r1"],
    )
    card = trainer.model_card(cfg, {"loss": 0.5}, run_id="abc", steps=7)
    assert "`abc`, run name `r1`, 7 optimizer steps" in card
    assert "s3://host/m" in card and "pw" not in card  # credentials stripped
    assert "| loss | 0.5 |" in card and "models:/gm@best" in card
