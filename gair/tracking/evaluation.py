"""MLflow side of an evaluation: a run linked to the evaluated model's run.

Linking: the evaluation run carries the caller's tags (``gair.eval.model_uri``,
``gair.eval.source_run_id``, the registered name/version); when it lives in the same
experiment as the training run it is also a child run of it (``mlflow.parentRunId``), so
the MLflow UI nests it. The training run gets a tag ``gair.eval.last_run_id`` pointing back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gair.tracking.mlflow_run import PARENT_TAG, RunHandle, create_run, experiment_id, redact_message

DEFAULT_EXPERIMENT = "gair-eval"
LAST_EVAL_TAG = "gair.eval.last_run_id"


def start_eval_run(
    tracking_uri: str,
    run_name: str,
    *,
    experiment: str = "",
    source_run_id: str | None = None,
    source_experiment_id: str | None = None,
    nest_under_source: bool = True,
    tags: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
) -> RunHandle:
    """Create the evaluation run in ``experiment`` (empty: the source run's experiment, else
    ``gair-eval``), nested under the source run when both share an experiment."""
    if experiment or not source_experiment_id:
        exp_id = experiment_id(tracking_uri, experiment or DEFAULT_EXPERIMENT)
    else:
        exp_id = source_experiment_id
    tags = dict(tags or {})
    if nest_under_source and source_run_id and source_experiment_id == exp_id:
        tags[PARENT_TAG] = source_run_id
    return create_run(tracking_uri, exp_id, run_name, tags=tags, params=params)


def link_source_run(run: RunHandle, source_run_id: str) -> None:
    """Tag the evaluated model's run with this evaluation's run id (a convenience: only warns)."""
    try:
        RunHandle(run.tracking_uri, source_run_id, run.auth).set_tags({LAST_EVAL_TAG: run.run_id})
    except Exception as exc:  # noqa: BLE001 - the link back is a convenience, not the result
        print(redact_message(f"warning: could not tag source run {source_run_id}: {exc}"), flush=True)
