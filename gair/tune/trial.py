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

import ray.tune
from ray.tune.integration.ray_train import TuneReportCallback

from gair.tracking import RunHandle, closing_run, config_params
from gair.tracking.sweep import start_or_resume_trial_run, trial_outcome_tags
from gair.train.trainer import build_trainer
from gair.tune.space import apply_trial


@dataclass(frozen=True)
class TrialContext:
    """What every trial needs from the sweep driver (passed with ``tune.with_parameters``)."""

    base: dict[str, Any]  # resolved PretrainConfig dict (data prepared, paths absolute)
    sweep_name: str
    trials_storage: str  # run.storage_path of the trials' Train runs
    experiment: str
    parent_run: RunHandle | None  # the sweep's MLflow run; None = no MLflow


def trial_run_name(sweep_name: str, trial_id: str) -> str:
    return f"{sweep_name}-{trial_id}"


def run_trial(config: dict[str, Any], context: TrialContext) -> None:
    """Tune function trainable: train one configuration, metrics reported through the callback."""
    trial_id = ray.tune.get_context().get_trial_id()
    cfg = apply_trial(context.base, config)
    name = trial_run_name(context.sweep_name, trial_id)
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, name=name, storage_path=context.trials_storage))
    run = None
    if context.parent_run is not None:
        run = start_or_resume_trial_run(
            context.parent_run, context.experiment, context.sweep_name, trial_id, name, config_params(cfg)
        )
    print(f"trial {trial_id}: {config} -> Train run {name}", flush=True)
    with closing_run(run, failure_tags=trial_outcome_tags("error", {})):
        result = build_trainer(cfg, run, callbacks=[TuneReportCallback()]).fit()
        if run is not None:
            last = {k: float(v) for k, v in (result.metrics or {}).items() if isinstance(v, (int, float))}
            run.set_tags(trial_outcome_tags("completed", last))
