"""MLflow for sweeps: a parent run per sweep, a child run per trial (nested in the UI).

Both are found again by tag when a sweep is resumed, so a resumed sweep keeps logging
into the same runs. The child run gets the trial's full resolved config as params and
its curves from rank 0 of the trial's workers (``gair.tracking.MetricsSink``); the
parent gets the sweep config and, at the end, the results table, the best config and
the plots (``gair.tune.report``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gair.configs import flatten, to_dict
from gair.configs.train import PretrainConfig
from gair.configs.tune import SweepConfig
from gair.tracking.mlflow_run import config_params, experiment_id, log_params, redact, resume_unfinished_run

SWEEP_TAG = "gair.sweep_name"
TRIAL_TAG = "gair.tune.trial_id"
STARTS_TAG = "gair.tune.starts"  # how many times the trial function started (resume tells)
STATUS_TAG = "gair.tune.status"  # completed | stopped_early | error
PARENT_TAG = "mlflow.parentRunId"
KIND_TAG = "gair.kind"  # sweep | trial


def _client(tracking_uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri)


def start_or_resume_parent(sweep: SweepConfig, base: PretrainConfig, tracking_uri: str, exp_name: str) -> str:
    """The sweep's parent run: its unfinished run of that name, or a new one."""
    client = _client(tracking_uri)
    exp_id = experiment_id(client, exp_name)
    filter_string = f"tags.`{SWEEP_TAG}` = '{sweep.run.name}' and tags.`{KIND_TAG}` = 'sweep'"
    run_id = resume_unfinished_run(client, exp_id, filter_string)
    if run_id is not None:
        return run_id
    run = client.create_run(exp_id, run_name=sweep.run.name, tags={SWEEP_TAG: sweep.run.name, KIND_TAG: "sweep"})
    params = {f"sweep.{k}": v for k, v in redact(flatten(to_dict(sweep))).items()}
    params.update({f"base.{k}": v for k, v in config_params(base).items()})
    log_params(client, run.info.run_id, params)
    return run.info.run_id


def start_or_resume_child(
    tracking_uri: str,
    exp_name: str,
    parent_id: str,
    sweep_name: str,
    trial_id: str,
    trial_name: str,
    cfg: PretrainConfig,
) -> str:
    """The trial's child run (created on its first start); counts the starts in a tag."""
    client = _client(tracking_uri)
    exp_id = experiment_id(client, exp_name)
    found = client.search_runs(
        [exp_id], filter_string=f"tags.`{TRIAL_TAG}` = '{trial_id}' and tags.`{SWEEP_TAG}` = '{sweep_name}'"
    )
    if found:
        run = found[0]
        run_id = run.info.run_id
        starts = int(run.data.tags.get(STARTS_TAG, "0")) + 1
        client.update_run(run_id, status="RUNNING")
    else:
        tags = {PARENT_TAG: parent_id, SWEEP_TAG: sweep_name, TRIAL_TAG: trial_id, KIND_TAG: "trial"}
        run_id = client.create_run(exp_id, run_name=trial_name, tags=tags).info.run_id
        log_params(client, run_id, config_params(cfg))
        starts = 1
    client.set_tag(run_id, STARTS_TAG, str(starts))
    return run_id


def child_runs(tracking_uri: str, exp_name: str, sweep_name: str) -> dict[str, Any]:
    """trial id -> its child run (mlflow Run), for the sweep's trials."""
    client = _client(tracking_uri)
    exp_id = experiment_id(client, exp_name)
    runs = client.search_runs([exp_id], filter_string=f"tags.`{SWEEP_TAG}` = '{sweep_name}'", max_results=10000)
    return {r.data.tags[TRIAL_TAG]: r for r in runs if TRIAL_TAG in r.data.tags}


def close_child(tracking_uri: str, run_id: str, status: str, last: dict[str, float]) -> None:
    """Mark a trial's child run: its final sweep status (tag) and MLflow run status."""
    client = _client(tracking_uri)
    client.set_tag(run_id, STATUS_TAG, status)
    if "step" in last:
        client.set_tag(run_id, "gair.tune.last_step", str(int(last["step"])))
    client.set_terminated(run_id, status="FAILED" if status == "error" else "FINISHED")


def log_parent_outputs(
    tracking_uri: str, run_id: str, files: list[Path], metrics: dict[str, float], tags: dict[str, str]
) -> None:
    client = _client(tracking_uri)
    for path in files:
        client.log_artifact(run_id, str(path))
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    if metrics:
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
    for k, v in tags.items():
        client.set_tag(run_id, k, v)


def end_parent(tracking_uri: str, run_id: str, status: str = "FINISHED") -> None:
    _client(tracking_uri).set_terminated(run_id, status=status)
