"""Model URIs -> a local ``gair.hub`` export directory, and the MLflow run they came from.

Accepted forms:
- ``models:/NAME@ALIAS`` and ``models:/NAME/VERSION`` (``VERSION`` may be ``latest``):
  a registered model version, as ``jobs/pretrain.py`` registers it;
- ``runs:/RUN_ID/PATH``: an artifact directory of a run (``runs:/<id>/model``);
- a local directory holding ``model.safetensors`` + ``config.json`` (or a ``file://`` URI).

Each may also be the MLflow pyfunc model directory that ``gair.serving.pyfunc`` logs
(``MLmodel`` + ``artifacts/gair_export``): ``local_dir`` is then the export inside it.

Each is checked against the registry / run first, so a URI that does not exist fails with
a message naming what is missing (and what exists), not a stack trace from deep inside
MLflow's artifact repository.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from gair.hub import CONFIG_NAME, WEIGHTS_NAME, export_dir


class ModelNotFoundError(FileNotFoundError):
    """A model URI that does not point at a GAIR export."""


@dataclass(frozen=True)
class ResolvedModel:
    """Where the weights are now, and where they came from."""

    uri: str  # as given
    local_dir: str  # a directory with model.safetensors + config.json
    run_id: str | None = None  # the MLflow run that produced the weights
    experiment_id: str | None = None
    registered_name: str | None = None
    version: str | None = None

    def tags(self) -> dict[str, str]:
        """Tags that link an evaluation run to its model."""
        tags = {"gair.eval.model_uri": self.uri}
        if self.run_id:
            tags["gair.eval.source_run_id"] = self.run_id
        if self.registered_name:
            tags["gair.eval.registered_model"] = self.registered_name
        if self.version:
            tags["gair.eval.model_version"] = str(self.version)
        return tags


_MODELS_ALIAS = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/]+)/?$")
_MODELS_VERSION = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>[^/]+)/?$")
_RUNS = re.compile(r"^runs:/(?P<run_id>[^/]+)(?:/(?P<path>.*))?$")


def resolve_model(uri: str, tracking_uri: str | None = None, dst_dir: str | Path | None = None) -> ResolvedModel:
    """Download (if needed) the export behind ``uri``; raise :class:`ModelNotFoundError` if there is none."""
    if not uri:
        raise ModelNotFoundError("no model URI given (use --model models:/NAME@ALIAS, runs:/RUN_ID/model or a folder)")
    if uri.startswith("models:/"):
        return _resolve_registered(uri, tracking_uri, dst_dir)
    if uri.startswith("runs:/"):
        return _resolve_run(uri, tracking_uri, dst_dir)
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        path = Path(parsed.path if parsed.scheme == "file" else uri).expanduser()
        check_export_dir(path, uri)
        return ResolvedModel(uri, str(export_dir(path).resolve()))
    raise ModelNotFoundError(
        f"model URI {uri!r} is not supported: use models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/PATH "
        "or a local export directory"
    )


def check_export_dir(path: str | Path, uri: str) -> None:
    path = Path(path)
    if not path.is_dir():
        raise ModelNotFoundError(f"model {uri!r}: local directory {path} does not exist")
    path = export_dir(path)
    missing = [n for n in (WEIGHTS_NAME, CONFIG_NAME) if not (path / n).is_file()]
    if missing:
        present = sorted(p.name for p in path.iterdir())[:10]
        raise ModelNotFoundError(
            f"model {uri!r}: {path} is not a GAIR export (missing {', '.join(missing)}; has {present})"
        )


def _client(tracking_uri: str | None):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri, registry_uri=tracking_uri)


def _not_found(exc: Exception) -> bool:
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code in (
        "RESOURCE_DOES_NOT_EXIST",
        "NOT_FOUND",
        "INVALID_PARAMETER_VALUE",
    )


def _resolve_registered(uri: str, tracking_uri: str | None, dst_dir: str | Path | None) -> ResolvedModel:
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    where = f"at {_display(tracking_uri)}"
    m_alias, m_version = _MODELS_ALIAS.match(uri), _MODELS_VERSION.match(uri)
    if not (m_alias or m_version):
        raise ModelNotFoundError(f"malformed model URI {uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    name = (m_alias or m_version).group("name")
    try:
        registered = client.get_registered_model(name)
    except MlflowException as exc:
        if not _not_found(exc):
            raise
        raise ModelNotFoundError(f"model URI {uri!r}: no registered model named {name!r} {where}") from exc
    if m_alias:
        alias = m_alias.group("alias")
        try:
            version = client.get_model_version_by_alias(name, alias)
        except MlflowException as exc:
            if not _not_found(exc):
                raise
            known = sorted((registered.aliases or {}).keys())
            raise ModelNotFoundError(
                f"model URI {uri!r}: registered model {name!r} has no alias {alias!r} {where} (aliases: {known})"
            ) from exc
    else:
        wanted = m_version.group("version")
        versions = client.search_model_versions(f"name = '{name}'")
        by_number = {str(v.version): v for v in versions}
        if wanted == "latest" and by_number:
            wanted = max(by_number, key=int)
        if wanted not in by_number:
            raise ModelNotFoundError(
                f"model URI {uri!r}: registered model {name!r} has no version {wanted!r} {where} "
                f"(versions: {sorted(by_number, key=int)})"
            )
        version = by_number[wanted]
    # Download from the version's source: MLflow resolves models:/ URIs against the
    # process-wide registry URI, not the one passed in.
    source = client.get_model_version_download_uri(name, str(version.version))
    local = _download(source, tracking_uri, dst_dir, shown=uri)
    experiment_id = _experiment_of(client, version.run_id)
    return ResolvedModel(uri, local, version.run_id or None, experiment_id, name, str(version.version))


def _resolve_run(uri: str, tracking_uri: str | None, dst_dir: str | Path | None) -> ResolvedModel:
    from mlflow.exceptions import MlflowException

    m = _RUNS.match(uri)
    if not m or not m.group("run_id"):
        raise ModelNotFoundError(f"malformed run URI {uri!r}: expected runs:/RUN_ID/PATH")
    run_id, path = m.group("run_id"), (m.group("path") or "").strip("/")
    client = _client(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if not _not_found(exc):
            raise
        raise ModelNotFoundError(f"model URI {uri!r}: no run {run_id!r} at {_display(tracking_uri)}") from exc
    names = {a.path.rstrip("/").split("/")[-1] for a in client.list_artifacts(run_id, path or None)}
    missing = [n for n in (WEIGHTS_NAME, CONFIG_NAME) if n not in names]
    if missing and "MLmodel" not in names:  # a pyfunc model directory is checked after download
        top = sorted(a.path for a in client.list_artifacts(run_id))
        raise ModelNotFoundError(
            f"model URI {uri!r}: run {run_id} has no GAIR export at artifact path {path or '/'!r} "
            f"(missing {', '.join(missing)}; the run's artifacts: {top})"
        )
    local = _download(
        f"{run.info.artifact_uri.rstrip('/')}/{path}" if path else run.info.artifact_uri,
        tracking_uri,
        dst_dir,
        shown=uri,
    )
    return ResolvedModel(uri, local, run_id, run.info.experiment_id)


def _download(uri: str, tracking_uri: str | None, dst_dir: str | Path | None, shown: str) -> str:
    import mlflow.artifacts

    if dst_dir is not None:
        Path(dst_dir).mkdir(parents=True, exist_ok=True)
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=uri,
        dst_path=str(dst_dir) if dst_dir is not None else None,
        tracking_uri=tracking_uri,
        registry_uri=tracking_uri,
    )
    check_export_dir(local, shown)
    return str(export_dir(local))


def _experiment_of(client, run_id: str | None) -> str | None:
    if not run_id:
        return None
    try:
        return client.get_run(run_id).info.experiment_id
    except Exception:  # noqa: BLE001 - a deleted source run only loses the link
        return None


def _display(tracking_uri: str | None) -> str:
    from gair.tracking.mlflow_run import strip_credentials

    return strip_credentials(tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "") or "the default tracking URI")
