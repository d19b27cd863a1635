"""MLflow tracking, the project's one boundary to MLflow.

- ``mlflow_run``: the tracking URI, :class:`RunHandle` (a typed run), :func:`closing_run`
  (ends a run FINISHED or FAILED), params/metrics logging and redaction;
- ``artifacts``: end-of-training artifacts and the model registry;
- ``sweep``: a sweep's parent run and its trials' child runs;
- ``evaluation``: an evaluation run linked to the evaluated model's run.

Every function takes plain values (URIs, names, dicts), never a job's config. MLflow itself
is imported lazily, inside the functions.
"""

from gair.tracking.artifacts import (
    RegisteredModel,
    log_training_artifacts,
    metric_history,
    plot_curves,
    register_model,
)
from gair.tracking.mlflow_run import (
    PARENT_TAG,
    MetricsSink,
    RunHandle,
    closing_run,
    config_params,
    create_run,
    redact,
    redact_tree,
    resolve_tracking_uri,
    start_or_resume_run,
    strip_credentials,
)

__all__ = [
    "PARENT_TAG",
    "MetricsSink",
    "RegisteredModel",
    "RunHandle",
    "closing_run",
    "config_params",
    "create_run",
    "log_training_artifacts",
    "metric_history",
    "plot_curves",
    "redact",
    "redact_tree",
    "register_model",
    "resolve_tracking_uri",
    "start_or_resume_run",
    "strip_credentials",
]
