"""Driver side of pretraining: data, the TorchTrainer, the export and the MLflow wrap-up.

``run_pretraining(cfg)`` is what ``jobs/pretrain.py`` calls after parsing its config.
Only the per-worker function (``gair.train.loop``) calls ``ray.train.*`` inside workers.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs as pafs
import ray.train
from ray.train.torch import TorchConfig, TorchTrainer

from gair import tracking
from gair.configs import to_dict
from gair.configs.train import PretrainConfig
from gair.data import storage
from gair.data.pipeline import build_dataset, start_epoch_splits
from gair.tracking import RunHandle
from gair.train.errors import stop_on_non_retryable_policy
from gair.train.export import export_checkpoint
from gair.train.faults import FAULT_ENV
from gair.train.loop import train_loop_per_worker
from gair.train.preflight import finished_run, write_finished


@dataclass
class PretrainResult:
    steps: int
    metrics: dict[str, float]
    checkpoint_uri: str
    export_uri: str
    mlflow_run_id: str | None = None
    model_uri: str | None = None


def resolve_paths(cfg: PretrainConfig) -> PretrainConfig:
    """Local paths made absolute on the driver (workers and the controller run elsewhere)."""
    run = cfg.run
    absolute = {
        "storage_path": run.storage_path
        if storage.is_remote(run.storage_path)
        else str(Path(run.storage_path).resolve()),
        "synthetic_dir": run.synthetic_dir
        if storage.is_remote(run.synthetic_dir)
        else str(Path(run.synthetic_dir).resolve()),
    }
    return dataclasses.replace(cfg, run=dataclasses.replace(run, **absolute))


def prepare_data(cfg: PretrainConfig) -> PretrainConfig:
    """Generate a synthetic dataset when ``data.train_manifest`` is empty (the embedded default).

    With validation on (``train.val_every``) and no ``data.val_manifest``, a synthetic
    validation set is generated too (another seed: other tiles and locations).
    """
    if cfg.data.train_manifest or cfg.data.mixed:
        return cfg
    opts = storage.S3Options.from_config(cfg.data)
    train_uri = _synthetic_manifest(
        cfg.run.synthetic_dir, cfg.run.synthetic_tiles, cfg.data.obs_per_tile, cfg.data.seed, opts
    )
    data = dataclasses.replace(cfg.data, train_manifest=train_uri)
    if cfg.train.val_every and not cfg.data.val_manifest:
        val_dir = storage.join(cfg.run.synthetic_dir, "val")
        val_uri = _synthetic_manifest(
            val_dir, cfg.run.synthetic_val_tiles, cfg.data.obs_per_tile, cfg.data.seed + 1, opts
        )
        data = dataclasses.replace(data, val_manifest=val_uri)
    return dataclasses.replace(cfg, data=data)


def _synthetic_manifest(
    out_uri: str, tiles: int, obs_per_tile: int, seed: int, opts: storage.S3Options | None = None
) -> str:
    """The manifest of a synthetic dataset under ``out_uri``, written unless it exists."""
    from gair.data import synthetic

    manifest_uri = storage.join(out_uri, "manifest")
    try:
        exists = bool(storage.list_parquet(manifest_uri, opts))
    except FileNotFoundError:
        exists = False
    if not exists:
        print(f"data.train_manifest is empty: writing {tiles} synthetic tiles to {out_uri}", flush=True)
        manifest_uri = synthetic.write_synthetic(out_uri, tiles=tiles, obs_per_tile=obs_per_tile, seed=seed, s3=opts)
    return manifest_uri


def build_run_config(cfg: PretrainConfig, callbacks: list[Any] | None = None) -> Any:
    """Ray Train RunConfig: name + storage (resume key), checkpoints to keep, failures to survive.

    ``callbacks``: Ray Train callbacks, e.g. Tune's ``TuneReportCallback`` in a sweep trial.
    """
    fs, path = (
        storage.resolve(cfg.run.storage_path, storage.S3Options.from_config(cfg.data).resolved())
        if storage.is_remote(cfg.run.storage_path)
        else (None, cfg.run.storage_path)
    )
    env = {k: os.environ[k] for k in FAULT_ENV if os.environ.get(k)}
    return ray.train.RunConfig(
        name=cfg.run.name,
        storage_path=path,
        storage_filesystem=fs,
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.run.keep_checkpoints),
        failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures),
        worker_runtime_env={"env_vars": env} if env else None,
        callbacks=callbacks,
    )


def build_trainer(cfg: PretrainConfig, run: RunHandle | None, callbacks: list[Any] | None = None) -> Any:
    """The TorchTrainer of ``cfg``; rank 0 of its workers logs metrics into ``run`` (None: no MLflow)."""
    # Training data: one dataset per epoch, split among the workers by an actor they all reach
    # (a dataset handed to TorchTrainer would repeat the same draws every epoch).
    train_splits = start_epoch_splits(
        cfg.data.train_manifest,
        cfg.data,
        cfg.model,
        cfg.train.num_workers,
        exclude_cpus=cfg.train.num_workers * cfg.train.cpus_per_worker,
    )
    datasets = {}
    if cfg.train.val_every:
        if not cfg.data.val_manifest:
            raise ValueError("train.val_every > 0 needs data.val_manifest (or synthetic training data)")
        datasets["val"] = build_dataset(cfg.data.val_manifest, cfg.data, cfg.model, train=False)
    # Ray Train's print patch tees every worker print to stdout *and* its logger (stderr):
    # each line would show twice in the job output.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    return GairTorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": to_dict(cfg), "mlflow": run, "train_splits": train_splits},
        torch_config=TorchConfig(backend="nccl" if cfg.train.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.train.num_workers,
            use_gpu=cfg.train.use_gpu,
            resources_per_worker={"CPU": cfg.train.cpus_per_worker, **({"GPU": 1} if cfg.train.use_gpu else {})},
        ),
        run_config=build_run_config(cfg, callbacks),
        datasets=datasets or None,
    )


class GairTorchTrainer(TorchTrainer):
    """TorchTrainer whose failure policy stops at once on a non-retryable worker error
    (``gair.train.errors``) instead of restarting the worker group ``max_failures`` times."""

    def _initialize_and_run_controller(self, **kwargs: Any) -> Any:
        kwargs["failure_policy"] = stop_on_non_retryable_policy(self.run_config.failure_config)
        return super()._initialize_and_run_controller(**kwargs)


def checkpoint_uri(cfg: PretrainConfig, checkpoint: Any) -> str:
    """The checkpoint's URI: Ray gives a path inside the storage filesystem, which loses the
    scheme of a remote ``run.storage_path`` (``s3://``, ``gs://``); put it back."""
    path = checkpoint.path
    if storage.is_remote(cfg.run.storage_path) and not storage.is_remote(path):
        scheme = urlparse(cfg.run.storage_path).scheme
        return f"{scheme}://{path.lstrip('/')}"
    return path


def preprocessing(cfg: PretrainConfig) -> dict[str, list[float]]:
    """Input statistics saved with the weights, so evaluation normalizes street views the same way."""
    return {"sv_mean": list(cfg.data.sv_mean), "sv_std": list(cfg.data.sv_std)}


def export_latest(cfg: PretrainConfig, checkpoint: Any, local_dir: str | Path) -> str:
    """Consolidate the final checkpoint to ``local_dir`` and copy it to ``<storage>/<name>/export``."""
    with checkpoint.as_directory() as ckpt_dir:
        export_checkpoint(
            ckpt_dir, cfg.model, local_dir, extra={"run_name": cfg.run.name, "preprocessing": preprocessing(cfg)}
        )
    target = storage.join(cfg.run.storage_path, cfg.run.name, "export")
    fs, path = storage.resolve(target, storage.S3Options.from_config(cfg.data))
    fs.create_dir(path, recursive=True)
    pafs.copy_files(str(local_dir), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    return target


def finished_result(cfg: PretrainConfig) -> PretrainResult | None:
    """The result of ``run.name`` if it already finished at ``train.max_steps`` (and
    ``run.reexport`` is off): a rerun then changes nothing."""
    if cfg.run.reexport:
        return None
    record = finished_run(cfg)
    if record is None:
        return None
    return PretrainResult(
        int(record["steps"]),
        dict(record.get("metrics", {})),
        record.get("checkpoint_uri", ""),
        record.get("export_uri", ""),
        record.get("mlflow_run_id"),
        record.get("model_uri"),
    )


def run_pretraining(cfg: PretrainConfig) -> PretrainResult:
    """Train (or resume ``run.name``), export the weights, log and register them in MLflow.

    A run that already finished at ``train.max_steps`` is left as it is (see ``run.reexport``).
    """
    cfg = resolve_paths(cfg)
    done = finished_result(cfg)
    if done is not None:
        print(
            f"run {cfg.run.name} already finished at step {done.steps}; nothing to do "
            f"(export {done.export_uri}; set run.reexport=true to export and register it again)"
        )
        return done
    cfg = prepare_data(cfg)
    run = start_tracking(cfg)
    with tracking.closing_run(run):
        result = build_trainer(cfg, run).fit()
        if result.checkpoint is None:
            raise RuntimeError("training finished without a checkpoint")
        with tempfile.TemporaryDirectory(prefix="gair-export-") as tmp:
            export_uri = export_latest(cfg, result.checkpoint, tmp)
            metrics = {k: float(v) for k, v in (result.metrics or {}).items() if isinstance(v, (int, float))}
            steps = int(metrics.get("step", cfg.train.max_steps))
            model_uri = None
            if run is not None:
                model_uri = log_and_register(cfg, run, tmp, metrics, steps)
    run_id = run.run_id if run is not None else None
    out = PretrainResult(steps, metrics, checkpoint_uri(cfg, result.checkpoint), export_uri, run_id, model_uri)
    write_finished(cfg, dataclasses.asdict(out))
    print(f"done: {out.steps} steps; checkpoint {out.checkpoint_uri}; export {out.export_uri}")
    return out


def start_tracking(cfg: PretrainConfig) -> RunHandle | None:
    """The MLflow run of ``run.name`` (resumed if it did not finish), or None with ``mlflow.enabled`` off."""
    if not cfg.mlflow.enabled:
        return None
    uri = tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri)
    run = tracking.start_or_resume_run(uri, cfg.mlflow.experiment, cfg.run.name, tracking.config_params(cfg))
    print(f"MLflow run {run.run_id} at {run.server}")
    return run


def log_and_register(
    cfg: PretrainConfig, run: RunHandle, export_dir: str, metrics: dict[str, float], steps: int
) -> str:
    """Config, model card, curves and weights to ``run``; the weights registered. Returns the model URI."""
    card = model_card(cfg, metrics, run_id=run.run_id, steps=steps)
    tracking.log_training_artifacts(run, export_dir, config=to_dict(cfg), model_card=card)
    registered = tracking.register_model(
        run, cfg.mlflow.registered_model, cfg.mlflow.alias, tags={"run_name": cfg.run.name}
    )
    print(f"registered {registered.uri} (version {registered.version})")
    return registered.uri


def _data_line(cfg: PretrainConfig) -> str:
    """The training data of the model card: the manifest, or each mixed one with its weight."""
    if cfg.data.mixed:
        return ", ".join(
            f"`{tracking.strip_credentials(s.uri)}` (weight {s.weight:g})" for s in cfg.data.train_manifests
        )
    return f"`{tracking.strip_credentials(cfg.data.train_manifest) or 'synthetic'}`"


def model_card(cfg: PretrainConfig, final: dict[str, float], *, run_id: str, steps: int) -> str:
    """MODEL_CARD.md of the exported model: data, batch, optimizer, inputs, final metrics, how to load."""
    m = cfg.model
    rows = "\n".join(f"| {k} | {v:.5g} |" for k, v in sorted(final.items()))
    return f"""# GAIR ({m.size}) pretrained by `jobs/pretrain.py`

- MLflow run: `{run_id}`, run name `{cfg.run.name}`, {steps} optimizer steps
- Data: {_data_line(cfg)}
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
