"""Probes on frozen features, scored by k-fold cross-validation (scikit-learn).

``ridge``: standardize, then ridge regression (``RidgeCV``) or L2 logistic regression
(``LogisticRegressionCV``), the strength picked by inner cross-validation on each
training fold. ``mlp``: standardize, then a small MLP. Scores are computed per outer fold
(mean and std reported); the out-of-fold predictions are returned for plots.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gair.configs.eval import ProbeConfig


class ProbeInputError(ValueError):
    """Features/targets a probe cannot be fitted on (too few samples, a singleton class...)."""


@dataclass
class ProbeResult:
    metrics: dict[str, float]  # mean over folds, plus <name>_std
    oof_pred: np.ndarray  # out-of-fold prediction of every sample
    per_fold: dict[str, list[float]] = field(default_factory=dict)


def _regressor(cfg: ProbeConfig):
    from sklearn.linear_model import RidgeCV
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if cfg.probe == "ridge":
        return make_pipeline(StandardScaler(), RidgeCV(alphas=list(cfg.alphas)))
    return make_pipeline(
        StandardScaler(),
        MLPRegressor(
            hidden_layer_sizes=tuple(cfg.hidden), max_iter=cfg.max_iter, early_stopping=True, random_state=cfg.seed
        ),
    )


def _classifier(cfg: ProbeConfig, min_class_count: int):
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if cfg.probe == "mlp":
        return make_pipeline(
            StandardScaler(),
            MLPClassifier(hidden_layer_sizes=tuple(cfg.hidden), max_iter=cfg.max_iter, random_state=cfg.seed),
        )
    if min_class_count >= 3:
        inner = min(3, min_class_count)
        clf = LogisticRegressionCV(Cs=[1.0 / a for a in cfg.alphas], cv=inner, max_iter=cfg.max_iter)
    else:  # too few samples per class for an inner split: fixed, moderate strength
        clf = LogisticRegression(C=1.0, max_iter=cfg.max_iter)
    return make_pipeline(StandardScaler(), clf)


def _check(x: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    if x.ndim != 2 or len(x) != len(y):
        raise ProbeInputError(f"features {x.shape} and targets {y.shape} do not match")
    if len(x) < k:
        raise ProbeInputError(f"{len(x)} samples are too few for {k}-fold cross-validation")
    if not np.isfinite(x).all():
        raise ProbeInputError("features contain NaN or infinite values")
    return x, y


def cross_validate_regression(x: np.ndarray, y: np.ndarray, cfg: ProbeConfig) -> ProbeResult:
    """k-fold R^2 and RMSE (mean and std over folds) and out-of-fold predictions."""
    from sklearn.base import clone
    from sklearn.metrics import mean_squared_error, r2_score
    from sklearn.model_selection import KFold

    x, y = _check(x, y, cfg.k_folds)
    y = y.astype(np.float64)
    if not np.isfinite(y).all():
        raise ProbeInputError("regression targets contain NaN or infinite values")
    oof = np.zeros_like(y)
    folds: dict[str, list[float]] = {"r2": [], "rmse": []}
    model = _regressor(cfg)
    for train, test in KFold(cfg.k_folds, shuffle=True, random_state=cfg.seed).split(x):
        fitted = clone(model).fit(x[train], y[train])
        oof[test] = fitted.predict(x[test])
        folds["r2"].append(float(r2_score(y[test], oof[test])))
        folds["rmse"].append(float(np.sqrt(mean_squared_error(y[test], oof[test]))))
    return ProbeResult(_summary(folds), oof, folds)


def cross_validate_classification(x: np.ndarray, y: np.ndarray, cfg: ProbeConfig) -> ProbeResult:
    """Stratified k-fold accuracy and macro-F1 (mean and std over folds) and out-of-fold predictions."""
    from sklearn.base import clone
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import StratifiedKFold

    x, y = _check(x, y, cfg.k_folds)
    labels, counts = np.unique(y.astype(str), return_counts=True)
    y = y.astype(str)
    if len(labels) < 2:
        raise ProbeInputError(f"classification needs at least 2 classes, got {labels.tolist()}")
    if counts.min() < cfg.k_folds:
        rare = labels[counts < cfg.k_folds].tolist()
        raise ProbeInputError(
            f"classes {rare} have fewer than k_folds={cfg.k_folds} samples; lower probe.k_folds or add samples"
        )
    oof = np.empty(len(y), dtype=object)
    folds: dict[str, list[float]] = {"accuracy": [], "macro_f1": []}
    model = _classifier(cfg, int(counts.min() * (cfg.k_folds - 1) / cfg.k_folds))
    for train, test in StratifiedKFold(cfg.k_folds, shuffle=True, random_state=cfg.seed).split(x, y):
        fitted = clone(model).fit(x[train], y[train])
        oof[test] = fitted.predict(x[test])
        folds["accuracy"].append(float(accuracy_score(y[test], oof[test])))
        folds["macro_f1"].append(float(f1_score(y[test], oof[test], average="macro", labels=labels)))
    return ProbeResult(_summary(folds), oof, folds)


def majority_baseline(y: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 of always predicting the most frequent class."""
    from sklearn.metrics import f1_score

    y = np.asarray(y).astype(str)
    labels, counts = np.unique(y, return_counts=True)
    pred = np.full(len(y), labels[counts.argmax()], dtype=object)
    return {
        "accuracy": float(counts.max() / len(y)),
        "macro_f1": float(f1_score(y, pred, average="macro", labels=labels)),
    }


def _summary(folds: dict[str, list[float]]) -> dict[str, float]:
    out = {}
    for k, v in folds.items():
        out[k] = float(np.mean(v))
        out[f"{k}_std"] = float(np.std(v))
    return out
