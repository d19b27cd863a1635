"""Sweep config, search space and report logic (no cluster)."""

from __future__ import annotations

import math

import pytest

from gair.configs import ConfigError, load_config
from gair.configs.train import PretrainConfig
from gair.configs.tune import SweepConfig
from gair.tune import report, space
from gair.tune.sweep import load_base
from tests.conftest import REPO_ROOT

SMOKE = REPO_ROOT / "configs/tune_smoke.yaml"


def _sweep(*sets: str) -> SweepConfig:
    return load_config(SweepConfig, SMOKE, [f"base.config={REPO_ROOT / 'configs/pretrain_smoke.yaml'}", *sets])


def test_configs_load_and_base_is_checked():
    sweep = _sweep()
    assert sweep.space.dimensions().keys() == {"loss.temperature", "data.extra_points"}
    base_dict, base = load_base(sweep)
    assert base.train.val_every == 3 and base.train.max_steps == 6
    space.check_space(sweep, base_dict)
    cluster = load_config(SweepConfig, REPO_ROOT / "configs/tune.yaml")
    assert cluster.search.searcher == "optuna" and cluster.space.temperature.low is not None


def test_bad_sweeps_are_errors():
    with pytest.raises(ConfigError, match="grid needs values"):
        _sweep("space.temperature.values=[]", "space.temperature.low=0.01", "space.temperature.high=0.5")
    with pytest.raises(ConfigError, match="val_every"):
        load_base(_sweep("base.overrides=[train.val_every=0]"))
    bad = _sweep("space.extra_points.values=[-1]")
    with pytest.raises(ConfigError, match="extra_points"):
        space.check_space(bad, load_base(bad)[0])
    with pytest.raises(ConfigError, match="unknown config key"):
        sweep = load_config(SweepConfig, None, ["space.temperature.values=[0.1]", "base.config=" + str(SMOKE)])
        sweep.space.other = []
        from gair.configs.tune import KeyedDimension

        sweep.space.other.append(KeyedDimension(values=[1], key="optim.lrr"))
        space.check_space(sweep, load_base(_sweep())[0])


def test_param_space_per_searcher():
    from ray.tune.search.sample import Categorical, Float, Integer

    grid = space.build_param_space(_sweep())
    assert grid["loss.temperature"] == {"grid_search": [0.5, 0.03]}
    rnd = space.build_param_space(
        _sweep(
            "search.searcher=random",
            "space.temperature.values=[]",
            "space.temperature.low=0.01",
            "space.temperature.high=0.5",
            "space.extra_points.values=[]",
            "space.extra_points.low=2",
            "space.extra_points.high=64",
            "space.extra_points.integer=true",
            "space.learnable_temperature.values=[false, true]",
        )
    )
    assert isinstance(rnd["loss.temperature"], Float) and isinstance(rnd["data.extra_points"], Integer)
    assert isinstance(rnd["loss.learnable_temperature"], Categorical)


def test_trial_overrides_apply_to_the_base():
    sweep = _sweep()
    base_dict, _ = load_base(sweep)
    cfg = space.apply_trial(base_dict, {"loss.temperature": 0.03, "data.extra_points": 8})
    assert isinstance(cfg, PretrainConfig)
    assert cfg.loss.temperature == 0.03 and cfg.data.extra_points == 8 and cfg.train.max_steps == 6


def test_best_row_prefers_completed_trials_and_best_config_loads(tmp_path):
    rows = [
        report.TrialRow("a", "completed", 6, {"loss.temperature": 0.5}, {"val_loss": 12.0, "step": 6}, 12.0),
        report.TrialRow("b", "stopped_early", 3, {"loss.temperature": 0.03}, {"val_loss": 11.0, "step": 3}, 11.0),
        report.TrialRow("c", "error", 0, {"loss.temperature": 0.2}, {}, math.nan),
    ]
    assert report.best_row(rows, "val_loss", "min").trial_id == "a"
    base_dict, _ = load_base(_sweep())
    files, best, printed = report.write_outputs(
        rows,
        metric="val_loss",
        mode="min",
        keys=["loss.temperature"],
        log_keys={"loss.temperature"},
        base_user=base_dict,
        sweep_name="s",
        out_dir=tmp_path,
    )
    assert best.trial_id == "a" and "stopped_early" in printed
    cfg = load_config(PretrainConfig, tmp_path / "best_config.yaml")
    assert cfg.loss.temperature == 0.5 and cfg.run.name == "s-best"
    assert {f.name for f in files} >= {"results.csv", "results.md", "val_loss_vs_loss.temperature.png", "curves.png"}
