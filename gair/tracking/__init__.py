"""MLflow tracking: run lifecycle and metrics (``mlflow_run``), end-of-run artifacts and the
model registry (``artifacts``). MLflow itself is imported lazily, inside the functions."""

from gair.tracking.artifacts import log_final_artifacts, model_card, plot_curves, register_model
from gair.tracking.mlflow_run import (
    MetricsSink,
    config_params,
    end_run,
    redact,
    resolve_tracking_uri,
    start_or_resume_run,
    strip_credentials,
)

__all__ = [
    "MetricsSink",
    "config_params",
    "end_run",
    "log_final_artifacts",
    "model_card",
    "plot_curves",
    "redact",
    "register_model",
    "resolve_tracking_uri",
    "start_or_resume_run",
    "strip_credentials",
]
