"""gair.eval.probes: k-fold probes on features, with clear errors for unusable inputs."""

from __future__ import annotations

import numpy as np
import pytest

from gair.configs.eval import ProbeConfig
from gair.eval import probes


def test_regression_probe_finds_a_linear_signal():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    y = x @ np.array([1.0, -2.0, 0.5, 0.0, 0.0]) + 0.1 * rng.normal(size=200)
    res = probes.cross_validate_regression(x, y, ProbeConfig(k_folds=4))
    assert res.metrics["r2"] > 0.95 and res.metrics["rmse"] < 0.3
    assert res.oof_pred.shape == (200,) and len(res.per_fold["r2"]) == 4
    noise = probes.cross_validate_regression(rng.normal(size=(200, 5)), y, ProbeConfig(k_folds=4))
    assert noise.metrics["r2"] < 0.1


def test_mlp_probe_fits_a_nonlinear_signal():
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, size=(400, 2))
    y = np.sin(3 * x[:, 0]) * np.cos(3 * x[:, 1])
    cfg = ProbeConfig(probe="mlp", hidden=(64, 64), max_iter=400, k_folds=3)
    assert (
        probes.cross_validate_regression(x, y, cfg).metrics["r2"]
        > probes.cross_validate_regression(x, y, ProbeConfig(k_folds=3)).metrics["r2"]
    )


def test_classification_probe_and_majority():
    rng = np.random.default_rng(2)
    y = np.repeat(["a", "b", "c"], 30)
    x = rng.normal(size=(90, 4)) + np.repeat(np.eye(3, 4) * 4, 30, axis=0)
    res = probes.cross_validate_classification(x, y, ProbeConfig(k_folds=3))
    assert res.metrics["accuracy"] > 0.9 and res.metrics["macro_f1"] > 0.9
    maj = probes.majority_baseline(y)
    assert maj["accuracy"] == pytest.approx(1 / 3)


def test_bad_probe_inputs_are_clear():
    x = np.zeros((10, 2))
    with pytest.raises(probes.ProbeInputError, match="at least 2 classes"):
        probes.cross_validate_classification(x, np.array(["a"] * 10), ProbeConfig(k_folds=2))
    with pytest.raises(probes.ProbeInputError, match=r"\['b'\] have fewer than k_folds"):
        probes.cross_validate_classification(x, np.array(["a"] * 9 + ["b"]), ProbeConfig(k_folds=2))
    with pytest.raises(probes.ProbeInputError, match="too few"):
        probes.cross_validate_regression(x[:3], np.zeros(3), ProbeConfig(k_folds=5))
    with pytest.raises(probes.ProbeInputError, match="NaN"):
        probes.cross_validate_regression(np.full((10, 2), np.nan), np.zeros(10), ProbeConfig(k_folds=2))
