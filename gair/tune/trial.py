"""The per-trial driver function: one Tune trial = one multi-worker TorchTrainer run.

Ray 2.60 (Train V2) pattern: Tune runs :func:`run_trial` in a small actor per trial; it
builds the trial's ``PretrainConfig``, a ``TorchTrainer`` (the same one as
``jobs/pretrain.py``) whose ``RunConfig`` carries ``TuneReportCallback``, and calls
``fit()``. The workers' ``ray.train.report`` metrics (training and validation, see
``gair.train.loop``) reach the trial through that callback, so ASHA sees them.

Each trial's Train run is named after the trial id under ``<storage>/<sweep>/trials``: a
trial restarted by a resumed sweep continues from its latest checkpoint. When ASHA stops
a trial, Tune ends this actor and with it the trainer it owns.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from gair.tune.space import apply_trial


@dataclass(frozen=True)
class TrialContext:
    """What every trial needs from the sweep driver (passed with ``tune.with_parameters``)."""

    base: dict[str, Any]  # resolved PretrainConfig dict (data prepared, paths absolute)
    sweep_name: str
    trials_storage: str  # run.storage_path of the trials' Train runs
    tracking_uri: str  # "" = no MLflow
    experiment: str
    parent_run_id: str | None


def trial_run_name(sweep_name: str, trial_id: str) -> str:
    return f"{sweep_name}-{trial_id}"


def run_trial(config: dict[str, Any], context: TrialContext) -> None:
    """Tune function trainable: train one configuration, metrics reported through the callback."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from gair.train.trainer import build_trainer
    from gair.tune import tracking

    trial_id = ray.tune.get_context().get_trial_id()
    cfg = apply_trial(context.base, config)
    name = trial_run_name(context.sweep_name, trial_id)
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, name=name, storage_path=context.trials_storage))
    run_id = None
    if context.tracking_uri and context.parent_run_id:
        run_id = tracking.start_or_resume_child(
            context.tracking_uri, context.experiment, context.parent_run_id, context.sweep_name, trial_id, name, cfg
        )
    mlflow_info = {"tracking_uri": context.tracking_uri, "run_id": run_id} if run_id else None
    print(f"trial {trial_id}: {config} -> Train run {name}", flush=True)
    try:
        result = build_trainer(cfg, mlflow_info, callbacks=[TuneReportCallback()]).fit()
    except BaseException:
        if run_id:
            tracking.close_child(context.tracking_uri, run_id, "error", {})
        raise
    if run_id:
        last = {k: float(v) for k, v in (result.metrics or {}).items() if isinstance(v, (int, float))}
        tracking.close_child(context.tracking_uri, run_id, "completed", last)
