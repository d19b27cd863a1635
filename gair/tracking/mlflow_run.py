"""MLflow runs: where the server is, a typed handle per run, and the run's lifecycle.

Every MLflow call of the project goes through ``gair.tracking``. A job resolves the
server once (:func:`resolve_tracking_uri`), opens a run (:func:`start_or_resume_run`,
:func:`create_run`) and gets a :class:`RunHandle`: two strings, so it travels to Ray
workers and Tune trials as is. :func:`closing_run` ends the run FINISHED when its block
completes and FAILED when it raises. Nothing secret is ever logged: params pass through
:func:`redact` and URIs lose their user:password part.

MLflow is imported inside the functions: importing it takes seconds, and the workers
that log nothing (every rank but 0) never pay for it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gair.configs import flatten, to_dict
from gair.redaction import known_secrets, redact_text, split_credentials, strip_credentials

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
RUN_NAME_TAG = "gair.run_name"
PARENT_TAG = "mlflow.parentRunId"  # MLflow nests a run carrying this tag under that run in its UI
_SECRET_KEY = re.compile(r"(secret|password|passwd|token|credential|api[_-]?key|access[_-]?key)", re.IGNORECASE)
_MAX_PARAM_CHARS = 6000  # MLflow's param value limit
_PARAMS_PER_BATCH = 100  # log_batch takes at most 100 params ...
_METRICS_PER_BATCH = 500  # ... and 1000 metrics at a time
REDACTED = "***"


def resolve_tracking_uri(configured: str = "", cwd: str | Path | None = None) -> str:
    """``configured`` (a job's ``mlflow.tracking_uri``), else ``MLFLOW_TRACKING_URI``, else a
    sqlite file in the working directory. The one place a tracking URI is resolved.

    Credentials in the URI (``http://user:password@host:port``) are taken out here, before
    MLflow or any message sees them: they move to ``MLFLOW_TRACKING_USERNAME`` /
    ``MLFLOW_TRACKING_PASSWORD`` (which MLflow reads), ``MLFLOW_TRACKING_URI`` loses them
    too, and the returned URI has none. A relative sqlite path is made absolute here, on
    the driver: workers run elsewhere.
    """
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI", "") or DEFAULT_TRACKING_URI
    uri, user, password = split_credentials(uri)
    if user is not None or password is not None:
        install_credentials((user or "", password or ""))
    env_uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if env_uri and strip_credentials(env_uri) != env_uri:
        os.environ["MLFLOW_TRACKING_URI"] = strip_credentials(env_uri)
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        rel = uri[len("sqlite:///") :]
        uri = "sqlite:///" + str(Path(cwd or os.getcwd(), rel).resolve())
    return uri


def install_credentials(auth: tuple[str, str] | None) -> None:
    """Put ``(username, password)`` where MLflow reads them (this process's environment)."""
    if not auth:
        return
    user, password = auth
    if user:
        os.environ["MLFLOW_TRACKING_USERNAME"] = user
    if password:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = password


def _env_credentials() -> tuple[str, str] | None:
    user = os.environ.get("MLFLOW_TRACKING_USERNAME", "")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD", "")
    return (user, password) if user or password else None


def redact_message(text: str) -> str:
    """A message with URL credentials and the secret values of the environment blanked."""
    return redact_text(text, known_secrets())


def redact(params: Mapping[str, Any]) -> dict[str, str]:
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


def redact_tree(tree: Any, prefix: str = "") -> Any:
    """A nested dict (e.g. ``to_dict(cfg)``) with the values :func:`redact` would change replaced."""
    if isinstance(tree, Mapping):
        return {k: redact_tree(v, f"{prefix}.{k}" if prefix else k) for k, v in tree.items()}
    if isinstance(tree, (str, int, float, bool)) or tree is None:
        safe = redact({prefix: tree})[prefix]
        return tree if safe == str(tree) else safe
    return tree


def config_params(config: Any) -> dict[str, str]:
    """A config dataclass as flat, redacted MLflow params (``optim.lr`` -> ``"0.00015"``)."""
    return redact(flatten(to_dict(config)))


@functools.lru_cache(maxsize=8)
def mlflow_client(tracking_uri: str) -> Any:
    """The (cached) ``MlflowClient`` of a server; its model registry is the same server."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri, registry_uri=tracking_uri)


@dataclass(frozen=True)
class RunHandle:
    """One MLflow run on one tracking server. Plain strings: picklable to workers and trials."""

    tracking_uri: str  # never with credentials (see resolve_tracking_uri)
    run_id: str
    # (username, password) for the server, carried to workers and trials (whose environment
    # lacks them); taken from the environment when not given; never shown.
    auth: tuple[str, str] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.auth is None:
            object.__setattr__(self, "auth", _env_credentials())

    @property
    def client(self) -> Any:
        install_credentials(self.auth)
        return mlflow_client(self.tracking_uri)

    @property
    def server(self) -> str:
        """The tracking URI without credentials, for messages."""
        return strip_credentials(self.tracking_uri)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params (redacted) in batches of 100."""
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in redact(params).items()]
        for i in range(0, len(items), _PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + _PARAMS_PER_BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Log scalar metrics at ``step``; names MLflow rejects get their odd characters replaced."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(metric_name(k), float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(batch), _METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=batch[i : i + _METRICS_PER_BATCH])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, directory: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(directory), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        """Mark the run ended: FINISHED, FAILED or KILLED."""
        self.client.set_terminated(self.run_id, status=status)


@contextlib.contextmanager
def closing_run(
    run: RunHandle | None,
    *,
    killed_on: tuple[type[BaseException], ...] = (),
    failure_tags: Mapping[str, str] | None = None,
) -> Iterator[RunHandle | None]:
    """Yield ``run``; end it FINISHED when the block completes, FAILED when it raises.

    An exception of a ``killed_on`` type ends it KILLED instead (an interrupt, not a fault);
    ``failure_tags`` are set on the run before it ends FAILED or KILLED. ``run=None``
    (tracking off) makes this a no-op. A tracking error while closing a failed run is
    printed, never raised over the exception that failed it.
    """
    if run is None:
        yield None
        return
    try:
        yield run
    except BaseException as exc:
        try:
            if failure_tags:
                run.set_tags(failure_tags)
            run.end("KILLED" if isinstance(exc, killed_on) else "FAILED")
        except Exception as log_exc:  # noqa: BLE001 - keep the original error
            print(f"warning: could not end MLflow run {run.run_id}: {type(log_exc).__name__}: {log_exc}", flush=True)
        raise
    run.end("FINISHED")


def experiment_id(tracking_uri: str, name: str) -> str:
    """The id of experiment ``name``, created if missing."""
    client = mlflow_client(tracking_uri)
    exp = client.get_experiment_by_name(name)
    return exp.experiment_id if exp is not None else client.create_experiment(name)


def create_run(
    tracking_uri: str,
    exp_id: str,
    run_name: str,
    *,
    tags: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
) -> RunHandle:
    """A new run in experiment ``exp_id`` (see :func:`experiment_id`), with its tags and
    (redacted) params logged."""
    client = mlflow_client(tracking_uri)
    run = RunHandle(tracking_uri, client.create_run(exp_id, run_name=run_name, tags=dict(tags or {})).info.run_id)
    if params:
        run.log_params(params)
    return run


def find_runs(tracking_uri: str, experiment: str, filter_string: str, max_results: int = 1000) -> list[Any]:
    """MLflow runs of ``experiment`` matching ``filter_string``, newest first."""
    return mlflow_client(tracking_uri).search_runs(
        [experiment_id(tracking_uri, experiment)],
        filter_string=filter_string,
        order_by=["attributes.start_time DESC"],
        max_results=max_results,
    )


def resume_unfinished_run(tracking_uri: str, experiment: str, filter_string: str) -> RunHandle | None:
    """The newest run matching ``filter_string`` if it did not finish, set RUNNING again; else None."""
    previous = find_runs(tracking_uri, experiment, filter_string, max_results=1)
    if previous and previous[0].info.status != "FINISHED":
        run = RunHandle(tracking_uri, previous[0].info.run_id)
        run.client.update_run(run.run_id, status="RUNNING")
        return run
    return None


def start_or_resume_run(tracking_uri: str, experiment: str, run_name: str, params: Mapping[str, Any]) -> RunHandle:
    """The run named ``run_name``: its unfinished run, or a new one with ``params`` logged."""
    found = resume_unfinished_run(tracking_uri, experiment, f"tags.`{RUN_NAME_TAG}` = '{run_name}'")
    if found is not None:
        return found
    exp_id = experiment_id(tracking_uri, experiment)
    return create_run(tracking_uri, exp_id, run_name, tags={RUN_NAME_TAG: run_name}, params=params)


class MetricsSink:
    """Logs a step's scalar metrics to an existing MLflow run (used on rank 0).

    Each (metric, step) is logged once: after a restart from a checkpoint the loop replays
    the steps since that checkpoint, and the values the run already has for them are kept.
    """

    def __init__(self, run: RunHandle) -> None:
        self.run = run
        self.logged_up_to = logged_steps(run)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        fresh = {k: v for k, v in metrics.items() if step > self.logged_up_to.get(metric_name(k), -1)}
        if not fresh:
            return
        try:
            self.run.log_metrics(fresh, step)
            self.logged_up_to.update({metric_name(k): step for k in fresh})
        except Exception as exc:  # noqa: BLE001 - a tracking hiccup must not kill training
            message = f"warning: MLflow metric logging failed at step {step}: {type(exc).__name__}: {exc}"
            print(redact_message(message), flush=True)


def logged_steps(run: RunHandle) -> dict[str, int]:
    """The last step logged for each metric of the run (empty for a new run, or on error)."""
    try:
        client = run.client
        keys = list(client.get_run(run.run_id).data.metrics)
        return {k: max((m.step for m in client.get_metric_history(run.run_id, k)), default=-1) for k in keys}
    except Exception as exc:  # noqa: BLE001 - a tracking hiccup must not kill training
        print(f"warning: could not read the MLflow run's logged steps: {type(exc).__name__}", flush=True)
        return {}


def metric_name(key: str) -> str:
    """MLflow metric names allow ``[\\w./ -]``; anything else becomes ``_``."""
    return re.sub(r"[^\w./ -]", "_", key)
