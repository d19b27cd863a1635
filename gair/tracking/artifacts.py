"""End-of-run MLflow artifacts: config, consolidated weights, model card, training curves;
and the registered model (``models:/NAME@ALIAS``).

The weights go to artifact path ``model`` in the ``gair.hub`` format (``model.safetensors``
+ ``config.json``), so an evaluation job does::

    path = mlflow.artifacts.download_artifacts("models:/gair@latest")
    model = gair.hub.load_pretrained(path)
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml

from gair.configs import to_dict
from gair.configs.train import PretrainConfig
from gair.tracking.mlflow_run import redact, strip_credentials

MODEL_ARTIFACT_PATH = "model"
CURVE_METRICS = ("loss", "lr", "temperature", "samples_per_s", "data_wait_fraction")


def metric_history(tracking_uri: str, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """Every logged metric's (step, value) series, sorted by step."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    out = {}
    for key in client.get_run(run_id).data.metrics:
        hist = client.get_metric_history(run_id, key)
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


def model_card(cfg: PretrainConfig, final: dict[str, float], *, run_id: str, steps: int) -> str:
    m = cfg.model
    rows = "\n".join(f"| {k} | {v:.5g} |" for k, v in sorted(final.items()))
    return f"""# GAIR ({m.size}) pretrained by `jobs/pretrain.py`

- MLflow run: `{run_id}`, run name `{cfg.run.name}`, {steps} optimizer steps
- Data: `{strip_credentials(cfg.data.train_manifest) or "synthetic"}`
- Global batch: {cfg.global_batch_size} tiles ({cfg.train.num_workers} workers x {cfg.data.batch_size}
  x {cfg.train.grad_accum_steps} accumulation), {cfg.data.obs_per_tile} street views and
  {cfg.data.extra_points} extra query points per tile
- Precision {cfg.train.precision}, DeepSpeed ZeRO stage {cfg.train.zero_stage}, AdamW lr {cfg.optim.lr}
  (warmup {cfg.optim.warmup_steps}, {cfg.optim.schedule}), weight decay {cfg.optim.weight_decay}

## Inputs
- RS: {len(m.rs_bands)} bands `{", ".join(m.rs_bands)}`, {m.rs_image_size} px, patch {m.rs_patch_size}
- Street view: RGB {m.sv_image_size} px, patch {m.sv_patch_size}
- Locations: (lon, lat) degrees, WGS84

## Final metrics (mean of the last logging interval)
| metric | value |
|---|---|
{rows}

## Load
```python
import mlflow, gair.hub
model = gair.hub.load_pretrained(mlflow.artifacts.download_artifacts("models:/{cfg.mlflow.registered_model}@{cfg.mlflow.alias}"))
```
"""


def log_final_artifacts(
    cfg: PretrainConfig,
    tracking_uri: str,
    run_id: str,
    export_dir: str | Path,
    *,
    final_metrics: dict[str, float],
    steps: int,
) -> dict[str, Any]:
    """Config, weights (artifact path ``model``), model card and curves; then register the model.

    Returns ``{"version": ..., "model_uri": "models:/NAME@ALIAS"}``.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="gair-mlflow-") as tmp:
        tmp = Path(tmp)
        config_text = yaml.safe_dump(_redacted_config(cfg), sort_keys=False)
        (tmp / "config.yaml").write_text(config_text)
        client.log_artifact(run_id, str(tmp / "config.yaml"))
        (tmp / "MODEL_CARD.md").write_text(model_card(cfg, final_metrics, run_id=run_id, steps=steps))
        client.log_artifact(run_id, str(tmp / "MODEL_CARD.md"))
        history = metric_history(tracking_uri, run_id)
        if history:
            client.log_artifact(run_id, str(plot_curves(history, tmp / "training_curves.png")))
    client.log_artifacts(run_id, str(export_dir), MODEL_ARTIFACT_PATH)
    return register_model(cfg, tracking_uri, run_id)


def register_model(cfg: PretrainConfig, tracking_uri: str, run_id: str) -> dict[str, Any]:
    """Register the run's ``model`` artifact directory under ``mlflow.registered_model`` and
    point ``mlflow.alias`` at the new version.

    The export is a plain directory (``gair.hub`` format), not an MLflow "logged model", so
    the version is created from the run's artifact URI (``mlflow.register_model("runs:/...")``
    in MLflow 3 only accepts logged models).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    name, alias = cfg.mlflow.registered_model, cfg.mlflow.alias
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    try:
        client.create_registered_model(name, description="GAIR pretrained weights (gair.hub format)")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{MODEL_ARTIFACT_PATH}"
    version = client.create_model_version(name, source, run_id=run_id, tags={"run_name": cfg.run.name})
    client.set_registered_model_alias(name, alias, version.version)
    return {"version": version.version, "model_uri": f"models:/{name}@{alias}"}


def _redacted_config(cfg: PretrainConfig) -> dict[str, Any]:
    """The resolved config as a nested dict with secret-looking values blanked."""

    def walk(node: Any, prefix: str) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, f"{prefix}.{k}" if prefix else k) for k, v in node.items()}
        if isinstance(node, (str, int, float, bool)) or node is None:
            safe = redact({prefix: node})[prefix]
            return node if safe == str(node) else safe
        return node

    return walk(to_dict(cfg), "")
