"""MLflow glue: one MLflow run per training run (resumed by ``run.name``), params, metrics.

The driver opens the run and logs the resolved config; rank 0 of the workers logs
metrics into it through :class:`MetricsSink`; the driver logs the artifacts and
registers the model at the end (``gair.tracking.artifacts``). Nothing secret is ever
logged: params pass through :func:`redact` and URIs lose their user:password part.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from gair.configs import flatten, to_dict
from gair.configs.train import PretrainConfig

RUN_NAME_TAG = "gair.run_name"
_SECRET_KEY = re.compile(r"(secret|password|passwd|token|credential|api[_-]?key|access[_-]?key)", re.IGNORECASE)
_MAX_PARAM_CHARS = 6000  # MLflow's param value limit
REDACTED = "***"


def resolve_tracking_uri(cfg: PretrainConfig, cwd: str | Path | None = None) -> str:
    """Config, else ``MLFLOW_TRACKING_URI``, else a sqlite file in the working directory.

    A relative sqlite path is made absolute here, on the driver: workers run elsewhere.
    """
    uri = cfg.mlflow.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "") or "sqlite:///mlflow.db"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        rel = uri[len("sqlite:///") :]
        uri = "sqlite:///" + str(Path(cwd or os.getcwd(), rel).resolve())
    return uri


def strip_credentials(uri: str) -> str:
    """``https://user:pw@host/x`` -> ``https://host/x`` (safe to print or log)."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def redact(params: dict[str, Any]) -> dict[str, str]:
    """Stringify params; blank out anything whose key looks secret; strip credentials from URIs."""
    out = {}
    for key, value in params.items():
        text = str(value)
        if _SECRET_KEY.search(key):
            text = REDACTED if text else ""
        elif "://" in text:
            text = strip_credentials(text)
        out[key] = text[:_MAX_PARAM_CHARS]
    return out


def config_params(cfg: PretrainConfig) -> dict[str, str]:
    """The resolved config as flat, redacted MLflow params (``optim.lr`` -> ``"0.00015"``)."""
    return redact(flatten(to_dict(cfg)))


def experiment_id(client: Any, name: str) -> str:
    """The id of experiment ``name``, created if missing."""
    exp = client.get_experiment_by_name(name)
    return exp.experiment_id if exp is not None else client.create_experiment(name)


def log_params(client: Any, run_id: str, params: dict[str, str]) -> None:
    """Log params in batches (``log_batch`` takes at most 100 at a time)."""
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i : i + 100])


def resume_unfinished_run(client: Any, exp_id: str, filter_string: str) -> str | None:
    """The newest run matching ``filter_string`` if it did not finish, set RUNNING again; else None."""
    previous = client.search_runs(
        [exp_id], filter_string=filter_string, order_by=["attributes.start_time DESC"], max_results=1
    )
    if previous and previous[0].info.status != "FINISHED":
        run_id = previous[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        return run_id
    return None


def start_or_resume_run(cfg: PretrainConfig, tracking_uri: str) -> str:
    """The MLflow run id for ``run.name``: the unfinished run of that name, or a new one."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp_id = experiment_id(client, cfg.mlflow.experiment)
    run_id = resume_unfinished_run(client, exp_id, f"tags.`{RUN_NAME_TAG}` = '{cfg.run.name}'")
    if run_id is not None:
        return run_id
    run_id = client.create_run(exp_id, run_name=cfg.run.name, tags={RUN_NAME_TAG: cfg.run.name}).info.run_id
    log_params(client, run_id, config_params(cfg))
    return run_id


def end_run(tracking_uri: str, run_id: str, status: str = "FINISHED") -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri).set_terminated(run_id, status=status)


class MetricsSink:
    """Logs a step's scalar metrics to an existing MLflow run (used on rank 0)."""

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri)
        self.run_id = run_id

    def log(self, step: int, metrics: dict[str, float]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(_metric_name(k), float(v), now, step) for k, v in metrics.items()]
        try:
            self.client.log_batch(self.run_id, metrics=batch)
        except Exception as exc:  # noqa: BLE001 - a tracking hiccup must not kill training
            print(f"warning: MLflow metric logging failed at step {step}: {type(exc).__name__}: {exc}", flush=True)


def _metric_name(key: str) -> str:
    # MLflow metric names allow [\w./ -]; map anything else.
    return re.sub(r"[^\w./ -]", "_", key)
