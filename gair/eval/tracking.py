"""MLflow side of an evaluation: a run linked to the evaluated model's run, metrics, artifacts.

Linking: the evaluation run carries tags ``gair.eval.model_uri``, ``gair.eval.source_run_id``
(and the registered name/version); when it lives in the same experiment as the training
run it is also a child run of it (``mlflow.parentRunId``), so the MLflow UI nests it. The
training run gets a tag ``gair.eval.last_run_id`` pointing back.
"""

from __future__ import annotations

import os
from pathlib import Path

from gair.configs import flatten, to_dict
from gair.configs.eval import EvalConfig
from gair.eval.model_uri import ResolvedModel
from gair.tracking.mlflow_run import experiment_id, log_params, redact

DEFAULT_EXPERIMENT = "gair-eval"
PARENT_TAG = "mlflow.parentRunId"


def resolve_tracking_uri(cfg: EvalConfig, cwd: str | Path | None = None) -> str:
    """Config, else ``MLFLOW_TRACKING_URI``, else a sqlite file in the working directory."""
    uri = cfg.mlflow.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "") or "sqlite:///mlflow.db"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(cwd or os.getcwd(), uri[len("sqlite:///") :]).resolve())
    return uri


def _experiment_id(client, cfg: EvalConfig, model: ResolvedModel) -> str:
    name = cfg.mlflow.experiment
    if not name:
        if model.experiment_id:
            return model.experiment_id
        name = DEFAULT_EXPERIMENT
    return experiment_id(client, name)


def start_eval_run(cfg: EvalConfig, tracking_uri: str, model: ResolvedModel) -> str:
    """Create the evaluation run (tags link it to the model's run) and log the config as params."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp_id = _experiment_id(client, cfg, model)
    tags = {**model.tags(), "gair.eval.tasks": ",".join(cfg.tasks)}
    if cfg.mlflow.nest_under_source and model.run_id and model.experiment_id == exp_id:
        tags[PARENT_TAG] = model.run_id
    name = cfg.mlflow.run_name or "eval-" + (model.registered_name or model.run_id or Path(model.local_dir).name)
    run_id = client.create_run(exp_id, run_name=name, tags=tags).info.run_id
    log_params(client, run_id, redact(flatten(to_dict(cfg))))
    return run_id


def finish_eval_run(
    tracking_uri: str, run_id: str, model: ResolvedModel, metrics: dict[str, float], output_dir: str | Path
) -> None:
    """Log metrics and the report folder, mark the run finished, tag the source run back."""
    import time

    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
    for i in range(0, len(batch), 500):
        client.log_batch(run_id, metrics=batch[i : i + 500])
    client.log_artifacts(run_id, str(output_dir), "eval")
    client.set_terminated(run_id, "FINISHED")
    if model.run_id:
        try:
            client.set_tag(model.run_id, "gair.eval.last_run_id", run_id)
        except Exception as exc:  # noqa: BLE001 - the link back is a convenience, not the result
            print(f"warning: could not tag source run {model.run_id}: {exc}", flush=True)


def fail_eval_run(tracking_uri: str, run_id: str) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri).set_terminated(run_id, "FAILED")
