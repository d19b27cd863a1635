"""End-of-run MLflow artifacts: config, consolidated weights, model card, training curves;
and the registered model (``models:/NAME@ALIAS``, :class:`RegisteredModel`).

The weights go to artifact path ``model`` as an MLflow pyfunc model (``gair.serving.pyfunc``)
around the ``gair.hub`` export (``model.safetensors`` + ``config.json``), so both work::

    uri = "models:/gair@current"  # mlflow.registered_model@mlflow.alias
    mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"lon": [8.54], "lat": [47.37]}))
    model = gair.hub.load_pretrained(mlflow.artifacts.download_artifacts(uri))
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gair.tracking.mlflow_run import RunHandle, redact_tree

MODEL_ARTIFACT_PATH = "model"
CURVE_METRICS = ("loss", "lr", "temperature", "samples_per_s", "data_wait_fraction")


def metric_history(run: RunHandle) -> dict[str, list[tuple[int, float]]]:
    """Every logged metric's (step, value) series, sorted by step."""
    client = run.client
    out = {}
    for key in client.get_run(run.run_id).data.metrics:
        hist = client.get_metric_history(run.run_id, key)
        out[key] = sorted((m.step, m.value) for m in hist)
    return out


def plot_curves(history: dict[str, list[tuple[int, float]]], path: str | Path) -> Path:
    """One panel per metric: the loss terms together, then lr, temperature, throughput."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = sorted(k for k in history if k == "loss" or k.endswith("loss") or "loss" in k)
    others = [k for k in CURVE_METRICS if k in history and k not in losses]
    panels = ([losses] if losses else []) + [[k] for k in others]
    fig, axes = plt.subplots(len(panels) or 1, 1, figsize=(7, 2.4 * max(1, len(panels))), squeeze=False)
    for ax, keys in zip(axes[:, 0], panels, strict=False):
        for k in keys:
            steps, values = zip(*history[k], strict=True)
            ax.plot(steps, values, label=k)
        ax.set_ylabel(keys[0] if len(keys) == 1 else "loss")
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=7)
    axes[-1, 0].set_xlabel("optimizer step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def log_training_artifacts(run: RunHandle, export_dir: str | Path, *, config: dict[str, Any], model_card: str) -> None:
    """The resolved config (redacted), the model card, the training curves and the weights
    (artifact path ``model``, a pyfunc model directory around ``export_dir``)."""
    from gair.serving.pyfunc import save_pyfunc

    with tempfile.TemporaryDirectory(prefix="gair-mlflow-") as tmp:
        tmp = Path(tmp)
        (tmp / "config.yaml").write_text(yaml.safe_dump(redact_tree(config), sort_keys=False))
        run.log_artifact(tmp / "config.yaml")
        (tmp / "MODEL_CARD.md").write_text(model_card)
        run.log_artifact(tmp / "MODEL_CARD.md")
        history = metric_history(run)
        if history:
            run.log_artifact(plot_curves(history, tmp / "training_curves.png"))
        run.log_artifacts(save_pyfunc(export_dir, tmp / "pyfunc"), MODEL_ARTIFACT_PATH)


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    version: str
    alias: str

    @property
    def uri(self) -> str:
        """``models:/NAME@ALIAS``, what an evaluation job loads."""
        return f"models:/{self.name}@{self.alias}"


def register_model(run: RunHandle, name: str, alias: str, tags: dict[str, str] | None = None) -> RegisteredModel:
    """Register the run's ``model`` artifact directory as a new version of ``name`` and
    point ``alias`` at it.

    The pyfunc model is a run artifact directory, not an MLflow 3 "logged model", so
    the version is created from the run's artifact URI (``mlflow.register_model("runs:/...")``
    in MLflow 3 only accepts logged models).
    """
    from mlflow.exceptions import MlflowException

    client = run.client
    try:
        client.create_registered_model(name, description="GAIR pretrained weights (gair.hub format)")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    source = f"{client.get_run(run.run_id).info.artifact_uri.rstrip('/')}/{MODEL_ARTIFACT_PATH}"
    version = client.create_model_version(name, source, run_id=run.run_id, tags=tags or {})
    client.set_registered_model_alias(name, alias, version.version)
    return RegisteredModel(name, str(version.version), alias)
