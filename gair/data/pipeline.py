"""Ray Data pipeline: Parquet manifest on object storage -> decoded samples -> training batches.

``build_dataset`` is called on the driver and handed to the trainer
(``TorchTrainer(datasets={"train": ds})``); each Ray Train worker calls
``iter_training_batches(ray.train.get_dataset_shard("train"), ...)`` and gets dicts of
torch tensors laid out as in ``docs/contracts.md``.

Bad rows are decoded into zero samples flagged ``ok=False`` (a decode task never raises
for a bad row, so one broken image cannot kill a run); the consumer drops them, counts
them in :class:`BadRowStats` and raises :class:`TooManyBadRowsError` past
``data.max_bad_fraction``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import ray.data
import torch

from gair.configs.data import DataConfig
from gair.configs.model import ModelConfig
from gair.data import decode, schema, storage, transforms

SAMPLE_KEYS = ("rs", "sv", "sv_mask", "lonlat", "xy", "xy_extra", "lonlat_extra")


class TooManyBadRowsError(RuntimeError):
    """More than ``data.max_bad_fraction`` of the rows seen were unusable."""


@dataclass
class BadRowStats:
    """Rows seen and dropped by one iterator, with a few (tile id, reason) examples."""

    seen: int = 0
    bad: int = 0
    examples: list[tuple[str, str]] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)
    max_examples: int = 5

    @property
    def fraction(self) -> float:
        return self.bad / self.seen if self.seen else 0.0

    def add(self, tile_ids: np.ndarray, ok: np.ndarray, bad_reasons: np.ndarray) -> None:
        self.seen += len(ok)
        for i in np.flatnonzero(~ok):
            self.bad += 1
            reason = str(bad_reasons[i])
            code = reason.split(":", 1)[0]
            self.reasons[code] = self.reasons.get(code, 0) + 1
            if len(self.examples) < self.max_examples:
                self.examples.append((str(tile_ids[i]), reason))

    def check(self, max_fraction: float) -> None:
        if self.bad and self.fraction > max_fraction:
            examples = "; ".join(f"{tid} ({why})" for tid, why in self.examples)
            raise TooManyBadRowsError(
                f"{self.bad} of {self.seen} rows ({self.fraction:.1%}) are unusable, above "
                f"data.max_bad_fraction={max_fraction:.1%}. Reasons: {self.reasons}. Examples: {examples}. "
                "Run `python jobs/validate_manifest.py URI --report FILE` for the full list."
            )


# ----------------------------------------------------------------------- building


def decode_spec(data_cfg: DataConfig, model_cfg: ModelConfig, *, train: bool, epoch: int = 0) -> decode.DecodeSpec:
    """The picklable decode recipe for these configs (S3 endpoint resolved on the driver)."""
    s3 = storage.S3Options(data_cfg.s3_endpoint_url, data_cfg.s3_region).resolved()
    return decode.DecodeSpec(
        bands=tuple(model_cfg.rs_bands),
        rs_size=model_cfg.rs_image_size,
        sv_size=model_cfg.sv_image_size,
        obs_per_tile=data_cfg.obs_per_tile,
        extra_points=data_cfg.extra_points,
        augment=train and data_cfg.augment,
        crop_min_scale=data_cfg.crop_min_scale,
        rs_flip=data_cfg.rs_flip,
        rs_jitter_p=data_cfg.rs_color_jitter_p,
        rs_jitter=tuple(data_cfg.rs_color_jitter),
        rs_jitter_bands=tuple(data_cfg.rs_color_jitter_bands),
        sv_jitter_p=data_cfg.sv_color_jitter_p,
        sv_jitter=tuple(data_cfg.sv_color_jitter),
        seed=data_cfg.seed,
        epoch=epoch,
        s3=s3,
    )


def configure_data_context(data_cfg: DataConfig) -> None:
    """DataContext settings that this pipeline relies on (order, quiet progress, small clusters)."""
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = data_cfg.deterministic
    # The default reservation sets aside a share of CPUs and memory per operator; on a
    # small node with a trainer holding CPUs it can starve the decode operator.
    ctx.op_resource_reservation_enabled = False
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False


def read_manifest_schema(manifest_uri: str, s3: storage.S3Options | None = None) -> pa.Schema:
    """Schema of the first shard of a manifest, checked; raises SchemaError or FileNotFoundError."""
    files = storage.list_parquet(manifest_uri, s3)
    if not files:
        raise FileNotFoundError(f"manifest {manifest_uri} holds no .parquet files")
    fs, _ = storage.resolve(manifest_uri, s3)
    try:
        file_schema = pq.read_schema(files[0], filesystem=fs)
    except pa.ArrowInvalid as exc:
        raise schema.SchemaError(f"{files[0]} is not a Parquet file: {exc}") from exc
    schema.check_schema(file_schema)
    return file_schema


def build_dataset(
    manifest_uri: str, data_cfg: DataConfig, model_cfg: ModelConfig, *, train: bool, epoch: int = 0
) -> ray.data.Dataset:
    """A lazy Ray Dataset of decoded samples (one row per tile) streamed from a manifest.

    ``epoch`` reseeds augmentation, observation sampling and block order; pass the epoch
    number when rebuilding the dataset per epoch to get fresh draws that are still
    deterministic.
    """
    configure_data_context(data_cfg)
    s3 = storage.S3Options(data_cfg.s3_endpoint_url, data_cfg.s3_region)
    read_manifest_schema(manifest_uri, s3)
    fs, path = storage.resolve(manifest_uri, s3)
    # Shuffle the order of shards, not blocks: randomize_block_order is an all-to-all
    # step that would hold every block before the first batch (no longer streaming).
    shuffle = ray.data.FileShuffleConfig(seed=data_cfg.seed + epoch) if train else None
    ds = ray.data.read_parquet(
        path, filesystem=fs, columns=list(schema.COLUMNS), file_extensions=["parquet"], shuffle=shuffle
    )
    return ds.map_batches(
        _decode_batch,
        fn_kwargs={"spec": decode_spec(data_cfg, model_cfg, train=train, epoch=epoch)},
        batch_size=data_cfg.decode_batch_size,
        batch_format="pyarrow",
        compute=ray.data.TaskPoolStrategy(size=data_cfg.num_decode_workers),
        num_cpus=data_cfg.num_cpus_per_decode,
    )


def _decode_batch(table: pa.Table, spec: decode.DecodeSpec) -> dict[str, np.ndarray]:
    # One torch thread per decode task: parallelism comes from Ray tasks, not intra-op threads.
    torch.set_num_threads(1)
    return decode.decode_rows(table.to_pylist(), spec)


# ----------------------------------------------------------------------- iterating


class TrainingBatches(Iterator[dict[str, torch.Tensor]]):
    """Iterator of training batches; ``.stats`` counts the rows seen and dropped so far."""

    def __init__(
        self, source: Any, data_cfg: DataConfig, model_cfg: ModelConfig, *, device: Any = None, skip_batches: int = 0
    ) -> None:
        self.data_cfg = data_cfg
        self.model_cfg = model_cfg
        self.device = torch.device(device) if device is not None else None
        self.skip_batches = skip_batches
        self.stats = BadRowStats()
        self._batches = self._generate(source)

    def __next__(self) -> dict[str, torch.Tensor]:
        return next(self._batches)

    def _generate(self, source: Any) -> Iterator[dict[str, torch.Tensor]]:
        cfg = self.data_cfg
        b = cfg.batch_size
        shuffle = cfg.shuffle_buffer if cfg.shuffle_buffer > 0 else None
        chunks = source.iter_batches(
            batch_size=b,
            batch_format="numpy",
            prefetch_batches=cfg.prefetch_batches,
            local_shuffle_buffer_size=shuffle,
            local_shuffle_seed=cfg.seed if shuffle else None,
        )
        pending: list[dict[str, np.ndarray]] = []
        n_pending = 0
        emitted = 0
        for chunk in chunks:
            self.stats.add(chunk["tile_id"], chunk["ok"], chunk["bad_reason"])
            if self.stats.seen >= cfg.min_rows_before_bad_check:
                self.stats.check(cfg.max_bad_fraction)
            good = {k: chunk[k][chunk["ok"]] for k in SAMPLE_KEYS}
            if len(good["rs"]):
                pending.append(good)
                n_pending += len(good["rs"])
            while n_pending >= b:
                batch, pending, n_pending = _take(pending, b)
                emitted += 1
                if emitted > self.skip_batches:
                    yield self._to_torch(batch)
        self.stats.check(cfg.max_bad_fraction)
        # A short final batch is dropped: every step has exactly batch_size tiles.

    def _to_torch(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        out = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}
        if self.device is not None:
            non_blocking = self.device.type == "cuda"
            out = {k: v.to(self.device, non_blocking=non_blocking) for k, v in out.items()}
        # Normalize street views on the consumer (and on the GPU when there is one): the
        # object store carries uint8, 4x less than float32.
        out["sv"] = transforms.normalize_sv(out["sv"], out["sv_mask"], self.data_cfg.sv_mean, self.data_cfg.sv_std)
        return out


def _take(
    pending: list[dict[str, np.ndarray]], n: int
) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]], int]:
    """The first ``n`` rows of the pending chunks, and what is left."""
    merged = {k: np.concatenate([p[k] for p in pending]) for k in SAMPLE_KEYS}
    batch = {k: v[:n] for k, v in merged.items()}
    rest = {k: v[n:] for k, v in merged.items()}
    left = len(rest["rs"])
    return batch, ([rest] if left else []), left


def iter_training_batches(
    data_iterator: Any, data_cfg: DataConfig, model_cfg: ModelConfig, *, device: Any = None, skip_batches: int = 0
) -> TrainingBatches:
    """Training batches (dicts of tensors, see docs/contracts.md) from a dataset shard.

    Args:
        data_iterator: what ``ray.train.get_dataset_shard("train")`` returns (a
            ``DataIterator``), or a ``ray.data.Dataset``.
        device: move tensors there (``"cuda"``); None keeps them on the CPU.
        skip_batches: drop this many batches first (resuming mid-epoch from a checkpoint).

    Raises:
        TooManyBadRowsError: when the fraction of unusable rows exceeds ``data_cfg.max_bad_fraction``.
    """
    return TrainingBatches(data_iterator, data_cfg, model_cfg, device=device, skip_batches=skip_batches)
