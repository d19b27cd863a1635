"""MLflow for sweeps: a parent run per sweep, a child run per trial (nested in the UI).

Both are found again by tag when a sweep is resumed, so a resumed sweep keeps logging
into the same runs. The child run gets the trial's full resolved config as params and
its curves from rank 0 of the trial's workers (:class:`gair.tracking.MetricsSink`); the
parent gets the sweep config and, at the end, the results table, the best config and
the plots (``gair.tune.report``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gair.tracking.mlflow_run import (
    PARENT_TAG,
    RunHandle,
    create_run,
    experiment_id,
    find_runs,
    resume_unfinished_run,
)

SWEEP_TAG = "gair.sweep_name"
TRIAL_TAG = "gair.tune.trial_id"
STARTS_TAG = "gair.tune.starts"  # how many times the trial function started (resume tells)
STATUS_TAG = "gair.tune.status"  # completed | stopped_early | error
LAST_STEP_TAG = "gair.tune.last_step"
KIND_TAG = "gair.kind"  # sweep | trial


def start_or_resume_sweep_run(
    tracking_uri: str, experiment: str, sweep_name: str, params: Mapping[str, Any]
) -> RunHandle:
    """The sweep's parent run: its unfinished run of that name, or a new one with ``params``."""
    filter_string = f"tags.`{SWEEP_TAG}` = '{sweep_name}' and tags.`{KIND_TAG}` = 'sweep'"
    found = resume_unfinished_run(tracking_uri, experiment, filter_string)
    if found is not None:
        return found
    tags = {SWEEP_TAG: sweep_name, KIND_TAG: "sweep"}
    return create_run(tracking_uri, experiment_id(tracking_uri, experiment), sweep_name, tags=tags, params=params)


def start_or_resume_trial_run(
    parent: RunHandle,
    experiment: str,
    sweep_name: str,
    trial_id: str,
    trial_name: str,
    params: Mapping[str, Any],
) -> RunHandle:
    """The trial's child run (created, with ``params``, on its first start); counts the starts in a tag."""
    filter_string = f"tags.`{TRIAL_TAG}` = '{trial_id}' and tags.`{SWEEP_TAG}` = '{sweep_name}'"
    found = find_runs(parent.tracking_uri, experiment, filter_string)
    if found:
        run = RunHandle(parent.tracking_uri, found[0].info.run_id, parent.auth)
        starts = int(found[0].data.tags.get(STARTS_TAG, "0")) + 1
        run.client.update_run(run.run_id, status="RUNNING")
    else:
        tags = {PARENT_TAG: parent.run_id, SWEEP_TAG: sweep_name, TRIAL_TAG: trial_id, KIND_TAG: "trial"}
        exp_id = experiment_id(parent.tracking_uri, experiment)
        run = create_run(parent.tracking_uri, exp_id, trial_name, tags=tags, params=params)
        starts = 1
    run.set_tags({STARTS_TAG: str(starts)})
    return run


def trial_runs(tracking_uri: str, experiment: str, sweep_name: str) -> dict[str, RunHandle]:
    """trial id -> its child run, for the sweep's trials."""
    runs = find_runs(tracking_uri, experiment, f"tags.`{SWEEP_TAG}` = '{sweep_name}'", max_results=10000)
    return {r.data.tags[TRIAL_TAG]: RunHandle(tracking_uri, r.info.run_id) for r in runs if TRIAL_TAG in r.data.tags}


def trial_outcome_tags(status: str, last: Mapping[str, float]) -> dict[str, str]:
    """A trial's final sweep status (``completed``, ``stopped_early``, ``error``) and last step."""
    tags = {STATUS_TAG: status}
    if "step" in last:
        tags[LAST_STEP_TAG] = str(int(last["step"]))
    return tags


def close_trial_run(run: RunHandle, status: str, last: Mapping[str, float]) -> None:
    """Tag a trial's child run with its outcome and end it (FAILED for ``error``, else FINISHED)."""
    run.set_tags(trial_outcome_tags(status, last))
    run.end("FAILED" if status == "error" else "FINISHED")
