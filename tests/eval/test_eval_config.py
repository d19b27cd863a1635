"""gair.configs.eval: defaults, validation, overrides, and the job's --help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gair.configs import ConfigError, describe, load_config
from gair.configs.eval import EvalConfig
from tests.conftest import REPO_ROOT


def test_every_key_is_documented():
    rows = describe(EvalConfig)
    assert len(rows) > 40
    undocumented = [key for key, _, help_ in rows if not help_]
    assert not undocumented


@pytest.mark.parametrize("path", ["configs/eval.yaml", "configs/eval_smoke.yaml"])
def test_shipped_configs_load(path: str):
    cfg = load_config(EvalConfig, REPO_ROOT / path, ["retrieval.manifest=s3://b/m"])
    assert "retrieval" in cfg.tasks and "location" in cfg.tasks


def test_validation_and_unknown_keys():
    with pytest.raises(ConfigError, match="retrieval.manifest is empty"):
        load_config(EvalConfig, None, [])
    with pytest.raises(ConfigError, match="no task is enabled"):
        load_config(EvalConfig, None, ["retrieval.enabled=false", "location.enabled=false"])
    with pytest.raises(ConfigError, match="Did you mean"):
        load_config(EvalConfig, None, ["retrieval.manifets=x"])
    with pytest.raises(ConfigError, match="not one of"):
        load_config(EvalConfig, None, ["retrieval.manifest=x", "retrieval.modes=[nili,nearest]"])
    with pytest.raises(ConfigError, match="k_folds"):
        load_config(EvalConfig, None, ["retrieval.manifest=x", "location.probe.k_folds=1"])
    cfg = load_config(EvalConfig, None, ["retrieval.enabled=false", "sv_probe.enabled=true", "sv_probe.csv=a.csv"])
    assert cfg.tasks == ["location", "sv_probe"]


def test_job_help_lists_all_keys():
    out = subprocess.run(
        [sys.executable, "jobs/evaluate.py", "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0
    for key, _, _ in describe(EvalConfig):
        assert key in out.stdout, key


def test_job_bad_model_exits_2(tmp_path: Path):
    out = subprocess.run(
        [sys.executable, "jobs/evaluate.py", "--model", str(tmp_path / "missing"), "--set", "retrieval.enabled=false",
         "--set", f"report.output_dir={tmp_path / 'out'}", "--set", "mlflow.enabled=false"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr[-2000:]
    assert "ModelNotFoundError" in out.stderr and "does not exist" in out.stderr
    assert "Traceback" not in out.stderr
