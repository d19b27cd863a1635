"""Checks a pretraining job makes before it starts Ray or opens an MLflow run.

Each failed check raises :class:`PreflightError` with one line that says what is wrong
and where; ``jobs/pretrain.py`` prints it and exits with code 2, having started nothing
and left no MLflow run behind.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from gair.configs.train import PretrainConfig
from gair.data import storage
from gair.redaction import strip_credentials

FINISHED_FILE = "FINISHED.json"  # <storage>/<run.name>/FINISHED.json, written when a run completes


class PreflightError(ValueError):
    """An input of the job is unusable; the message is one line naming it."""


def check_manifest(uri: str, key: str, opts: storage.S3Options | None = None) -> None:
    """``uri`` (config key ``key``) holds Parquet shards whose schema is a GAIR manifest."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from gair.data.schema import schema_problems

    try:
        files = storage.list_parquet(uri, opts)
    except FileNotFoundError:
        raise PreflightError(f"{key}: manifest {strip_credentials(uri)} does not exist") from None
    except OSError as exc:
        raise PreflightError(f"{key}: cannot read manifest {strip_credentials(uri)}: {_short(exc)}") from exc
    if not files:
        raise PreflightError(f"{key}: {strip_credentials(uri)} holds no .parquet files")
    fs, _ = storage.resolve(uri, opts)
    for path in files:
        try:
            schema = pq.read_schema(fs.open_input_file(path))
        except (pa.ArrowInvalid, OSError) as exc:
            raise PreflightError(f"{key}: {path} is not a readable Parquet file: {_short(exc)}") from exc
        problems = schema_problems(schema)
        if problems:
            raise PreflightError(f"{key}: {path} is not a GAIR manifest: {'; '.join(problems)}")


def check_writable(uri: str, key: str, opts: storage.S3Options | None = None) -> None:
    """Write and delete a probe under ``uri``: the job can store checkpoints there.

    On S3 and gs:// the bucket must exist (nothing here or in ``gair.data.storage`` creates buckets).
    """
    where = strip_credentials(uri)
    try:
        storage.ensure_dir(uri, opts)
        probe = storage.join(uri, f".gair-write-probe-{uuid.uuid4().hex[:8]}")
        storage.write_bytes(probe, b"probe", opts)
        storage.delete(probe, opts)
    except storage.BucketNotFoundError as exc:
        raise PreflightError(f"{key}: {exc}") from None
    except PermissionError as exc:
        raise PreflightError(f"{key}: {where} is not writable (permission denied: {_short(exc)})") from None
    except OSError as exc:
        raise PreflightError(f"{key}: {where} is not writable: {_short(exc)}") from None


def check_inputs(cfg: PretrainConfig) -> None:
    """Manifests exist and have the schema; the storage (and synthetic data) path is writable."""
    opts = storage.S3Options.from_config(cfg.data)
    check_writable(cfg.run.storage_path, "run.storage_path", opts)
    if cfg.data.train_manifest:
        check_manifest(cfg.data.train_manifest, "data.train_manifest", opts)
    elif cfg.data.mixed:
        for i, src in enumerate(cfg.data.train_manifests):
            check_manifest(src.uri, f"data.train_manifests[{i}] ({src.uri})", opts)
    else:
        check_writable(cfg.run.synthetic_dir, "run.synthetic_dir", opts)
    if cfg.data.val_manifest and cfg.train.val_every:
        check_manifest(cfg.data.val_manifest, "data.val_manifest", opts)


def required_resources(cfg: PretrainConfig) -> dict[str, float]:
    """What the training workers and the decode tasks reserve at once."""
    t, d = cfg.train, cfg.data
    cpu = t.num_workers * t.cpus_per_worker + d.num_decode_workers * d.num_cpus_per_decode
    return {"CPU": cpu, **({"GPU": float(t.num_workers)} if t.use_gpu else {})}


def check_resources(cfg: PretrainConfig, available: dict[str, float]) -> None:
    """The workers fit the cluster (``available``: ``ray.cluster_resources()``), or Ray Train
    would wait for them forever."""
    if not cfg.run.check_resources:
        return
    d = cfg.data
    if d.decode_placement == "require" and available.get(d.decode_resource, 0.0) <= 0:
        raise PreflightError(
            f"no node offers resource {d.decode_resource!r}, which data.decode_placement=require has every "
            "read and decode task wait for: add such nodes (cluster/: the CPU preprocessing group), use "
            "data.decode_placement=auto, or run.check_resources=false on an autoscaling cluster that starts them"
        )
    need = required_resources(cfg)
    short = {k: v for k, v in need.items() if available.get(k, 0.0) + 1e-9 < v}
    if short:
        t, d = cfg.train, cfg.data
        have = ", ".join(f"{available.get(k, 0.0):g} {k}" for k in short)
        raise PreflightError(
            f"the cluster has {have}, the job needs {', '.join(f'{v:g} {k}' for k, v in short.items())} "
            f"(train.num_workers={t.num_workers} x train.cpus_per_worker={t.cpus_per_worker:g}"
            f"{' and 1 GPU each' if t.use_gpu else ''}, plus data.num_decode_workers={d.num_decode_workers} x "
            f"data.num_cpus_per_decode={d.num_cpus_per_decode:g}): use fewer workers or a larger cluster "
            "(run.check_resources=false on an autoscaling cluster)"
        )


def finished_run(cfg: PretrainConfig) -> dict[str, Any] | None:
    """The record of ``run.name`` having finished at ``train.max_steps`` or later, else None."""
    uri = storage.join(cfg.run.storage_path, cfg.run.name, FINISHED_FILE)
    try:
        record = json.loads(storage.read_bytes(uri, storage.S3Options.from_config(cfg.data)))
    except FileNotFoundError:
        return None
    return record if int(record.get("steps", 0)) >= cfg.train.max_steps else None


def write_finished(cfg: PretrainConfig, record: dict[str, Any]) -> None:
    uri = storage.join(cfg.run.storage_path, cfg.run.name, FINISHED_FILE)
    storage.write_bytes(uri, json.dumps(record).encode(), storage.S3Options.from_config(cfg.data))


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
