"""Ray Data pipeline: Parquet manifest on object storage -> decoded samples -> training batches.

``build_dataset(..., epoch=e)`` is the data of one epoch. To draw anew every epoch, an
:class:`EpochSplits` actor (the manifest listed once, each epoch's dataset split among the
workers) serves each Ray Train worker's ``EpochBatchSource(splits, ...)(epoch, skip_batches)``;
a dataset handed to the trainer (validation) is read with
``iter_training_batches(ray.train.get_dataset_shard("val"), ...)``. Batches are dicts of
torch tensors laid out as in ``docs/contracts.md``.

Bad rows are decoded into zero samples flagged ``ok=False`` (a decode task never raises
for a bad row, so one broken image cannot kill a run); the consumer drops them, counts
them in :class:`BadRowStats` and raises :class:`TooManyBadRowsError` past
``data.max_bad_fraction``.

On a cluster with CPU-only preprocessing nodes (those offering the custom resource
``data.decode_resource``, "preprocess" in ``cluster/``), read and decode tasks ask for a sliver
of that resource, so they run there and leave the GPU nodes' CPUs to the trainers
(``data.decode_placement``; :func:`placement_resources`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray
import ray.data

from gair.configs.data import DataConfig, source_labels
from gair.configs.model import ModelConfig
from gair.data import decode, schema, storage, transforms

if TYPE_CHECKING:
    import torch

# torch is imported where it is used (the decode tasks, the consumer), not here: the coordinator
# of each epoch's split unpickles this module's task functions, and a process that imports torch
# for that starts ~2.5 s later and holds ~400 MB more (measured: 703 MB RSS with torch).

SAMPLE_KEYS = ("rs", "sv", "sv_mask", "lonlat", "xy", "xy_extra", "lonlat_extra")


class TooManyBadRowsError(RuntimeError):
    """More than ``data.max_bad_fraction`` of the rows seen were unusable."""


@dataclass
class BadRowStats:
    """Rows (samples) seen and dropped by one iterator, with a few (tile id, reason) examples.

    ``reasons`` counts dropped rows by reason; ``obs_skipped`` / ``obs_reasons`` count the
    observations skipped inside rows that were kept (their tile trains on its good ones).
    """

    seen: int = 0
    bad: int = 0
    examples: list[tuple[str, str]] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)
    obs_skipped: int = 0
    obs_reasons: dict[str, int] = field(default_factory=dict)
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

    def add_skipped(self, skipped_obs: np.ndarray) -> None:
        """Count the ``skipped_obs`` column of decoded rows ("reason: obs id" joined by "|")."""
        for text in skipped_obs:
            for item in str(text).split("|") if text else ():
                code = item.split(":", 1)[0]
                self.obs_skipped += 1
                self.obs_reasons[code] = self.obs_reasons.get(code, 0) + 1

    def check(self, max_fraction: float) -> None:
        if self.bad and self.fraction > max_fraction:
            examples = "; ".join(f"{tid} ({why})" for tid, why in self.examples)
            raise TooManyBadRowsError(
                f"{self.bad} of {self.seen} rows ({self.fraction:.1%}) are unusable, above "
                f"data.max_bad_fraction={max_fraction:.1%}. Reasons: {self.reasons}. Examples: {examples}. "
                f"Observations skipped in kept tiles: {self.obs_reasons}. "
                "Run `python jobs/validate_manifest.py URI --report FILE` for the full list."
            )


# ----------------------------------------------------------------------- building


def decode_spec(data_cfg: DataConfig, model_cfg: ModelConfig, *, train: bool, epoch: int = 0) -> decode.DecodeSpec:
    """The picklable decode recipe for these configs (S3 endpoint resolved on the driver)."""
    s3 = storage.S3Options.from_config(data_cfg).resolved()
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
        max_nodata_fraction=data_cfg.max_nodata_fraction,
        visit_all=train and data_cfg.visit_all_observations,
        s3=s3,
    )


def configure_data_context(data_cfg: DataConfig, spec: decode.DecodeSpec) -> None:
    """DataContext settings that this pipeline relies on (order, quiet progress, small clusters,
    one block per decode output)."""
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = data_cfg.deterministic
    # The default reservation sets aside a share of CPUs and memory per operator; on a
    # small node with a trainer holding CPUs it can starve the decode operator.
    ctx.op_resource_reservation_enabled = False
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    ctx.target_max_block_size = block_target_bytes(data_cfg, spec)


MIN_BLOCK_BYTES = 2**20


def block_target_bytes(data_cfg: DataConfig, spec: decode.DecodeSpec) -> int:
    """Ray Data's target block size for the decode operator: 3/4 of one decode output
    (``data.decode_batch_size`` samples of ``spec``'s shapes), at least 1 MiB.

    Ray Data holds a task's outputs back until they exceed the target and slices one above 1.5x
    the target. With 3/4 of an output, every output of that size is a block of its own: the
    first batch of an epoch waits for one decode, not two, and when ``decode_batch_size`` equals
    ``batch_size`` a batch is one block, given without concatenating. (A fixed 16 MiB target
    merged two 15.5 MiB outputs of the paper's sizes and sliced them into blocks of 10-24 rows.)
    """
    per_sample = sum(a.nbytes for a in decode.empty_sample(spec).values())
    return max(int(0.75 * data_cfg.decode_batch_size * per_sample), MIN_BLOCK_BYTES)


_placement_said: set[tuple[str, bool, str]] = set()  # (resource, offered, mode) already said


def placement_resources(data_cfg: DataConfig, cluster_resources: Mapping[str, float] | None = None) -> dict[str, float]:
    """Custom resources each read and decode task asks for, by ``data.decode_placement``.

    ``auto``: ``{data.decode_resource: data.decode_resource_per_task}`` when a live node offers
    that resource (``cluster_resources``, default ``ray.cluster_resources()``), else ``{}`` (any
    node); which of the two is said once per process. ``require``: always the resource (an
    autoscaler starts a node offering it; waiting for one is said once). ``anywhere``: ``{}``.
    """
    mode = data_cfg.decode_placement
    if mode == "anywhere":
        return {}
    name = data_cfg.decode_resource
    if cluster_resources is None:
        cluster_resources = ray.cluster_resources() if ray.is_initialized() else {}
    offered = float(cluster_resources.get(name, 0.0))
    found = offered > 0 or mode == "require"
    if (name, offered > 0, mode) not in _placement_said:
        _placement_said.add((name, offered > 0, mode))
        if offered > 0:
            note = f"read and decode run only on the nodes offering resource {name!r} ({offered:g} in all)"
        elif mode == "require":
            note = f"no node offers resource {name!r} yet: read and decode wait for one (an autoscaler starts it)"
        else:
            note = f"no node offers resource {name!r}: read and decode run on any node"
        print(f"data: {note} (data.decode_placement={mode})", flush=True)
    return {name: data_cfg.decode_resource_per_task} if found else {}


def read_manifest_schema(manifest_uri: str, s3: storage.S3Options | None = None) -> pa.Schema:
    """Schema of the first shard of a manifest, checked; raises SchemaError or FileNotFoundError."""
    return list_manifest(manifest_uri, s3).schema


@dataclass(frozen=True)
class ManifestFiles:
    """A manifest's Parquet files, listed and checked once (not again at every epoch)."""

    uri: str
    paths: tuple[str, ...]  # inside the filesystem of ``uri``
    schema: pa.Schema


def list_manifest(manifest_uri: str, s3: storage.S3Options | None = None) -> ManifestFiles:
    """List a manifest's shards and check the first one's schema; raises SchemaError or FileNotFoundError."""
    files = storage.list_parquet(manifest_uri, s3)
    if not files:
        raise FileNotFoundError(f"manifest {manifest_uri} holds no .parquet files")
    fs, _ = storage.resolve(manifest_uri, s3)
    try:
        file_schema = pq.read_schema(files[0], filesystem=fs)
    except pa.ArrowInvalid as exc:
        raise schema.SchemaError(f"{files[0]} is not a Parquet file: {exc}") from exc
    schema.check_schema(file_schema)
    return ManifestFiles(manifest_uri, tuple(files), file_schema)


def build_dataset(
    manifest_uri: str,
    data_cfg: DataConfig,
    model_cfg: ModelConfig,
    *,
    train: bool,
    epoch: int = 0,
    files: ManifestFiles | None = None,
) -> ray.data.Dataset:
    """A lazy Ray Dataset of decoded samples streamed from a manifest: the data of one epoch.

    Training (``train=True``): ``epoch`` draws the shard order, each tile's observation order,
    crops, flips and extra points anew, deterministically from (``data.seed``, epoch, tile); with
    ``data.visit_all_observations`` a tile of N observations yields ceil(N / K) samples with
    disjoint observations, so the epoch presents every observation once. Build one dataset per
    epoch (:class:`EpochSplits` does it for Ray Train workers); ``files`` (from
    :func:`list_manifest`) saves listing the manifest again.
    """
    s3 = storage.S3Options.from_config(data_cfg)
    files = files or list_manifest(manifest_uri, s3)
    paths = list(files.paths)
    if train:
        # Shuffle the order of shards, not blocks: randomize_block_order is an all-to-all
        # step that would hold every block before the first batch (no longer streaming).
        paths = [paths[i] for i in np.random.default_rng([data_cfg.seed, epoch]).permutation(len(paths))]
    spec = decode_spec(data_cfg, model_cfg, train=train, epoch=epoch)
    configure_data_context(data_cfg, spec)
    return _read_and_decode(paths, manifest_uri, data_cfg, _decode_batch, {"spec": spec})


def _read_and_decode(
    paths: list[str], fs_uri: str, data_cfg: DataConfig, fn: Any, fn_kwargs: dict[str, Any], *, with_path: bool = False
) -> ray.data.Dataset:
    """Read the Parquet shards ``paths`` (inside the filesystem of ``fs_uri``) and decode them with
    ``fn`` (called with ``fn_kwargs``), in tasks of consecutive shards (:func:`shard_groups`).

    One Ray Data operator: a task opens its shards one after the other, streams each
    data.decode_batch_size rows at a time (one record batch) and hands each to ``fn`` (``with_path``:
    with the shard's path as the column ``path``); the next record batch, of this shard or the
    next, is read while one decodes. The shard list comes from the driver's listing
    (:func:`list_manifest`), so there is no listing step in the pipeline, and the first rows are
    decoded as soon as the first record batch is read: Ray Data's own Parquet read
    (``read_parquet``) lists the files again in a task of its own (~3 s on S3 before anything is
    read) and materializes ~16 MiB blocks of raw rows before a decode can start (and its read does
    not fuse with a map that asks for a batch size). The tasks never ask for more than
    num_decode_workers x num_cpus_per_decode CPUs, and with a preprocessing resource they run only
    on (and hold the CPUs of) the nodes offering it. Parallelism is at most one task per shard:
    write manifests as many shards (the builders do).
    """
    placement = placement_resources(data_cfg) or None
    groups = shard_groups(paths, data_cfg.num_decode_workers * data_cfg.tasks_per_decode_worker)
    items = ray.data.from_items([{"paths": g} for g in groups], override_num_blocks=max(len(groups), 1))
    kwargs = {
        "fs_uri": fs_uri,
        # Resolved now: the workers see the driver's endpoint and region.
        "s3": storage.S3Options.from_config(data_cfg).resolved(),
        "fn": fn,
        "fn_kwargs": fn_kwargs,
        "chunk": data_cfg.decode_batch_size,
        "with_path": with_path,
    }
    return items.map_batches(
        _read_shards,
        fn_kwargs=kwargs,
        batch_size=1,
        batch_format="pyarrow",
        compute=ray.data.TaskPoolStrategy(size=data_cfg.num_decode_workers),
        num_cpus=data_cfg.num_cpus_per_decode,
        resources=placement,
    )


def shard_groups(paths: list[str], tasks: int) -> list[list[str]]:
    """``paths`` in ``tasks`` runs of consecutive shards, as even in count as can be (``tasks`` <= 0
    or >= the shards: one shard each). The order of the shards is kept: read one task after the
    other, the groups give the shards in the order given."""
    if tasks <= 0 or tasks >= len(paths):
        return [[p] for p in paths]
    bounds = np.linspace(0, len(paths), tasks + 1).round().astype(int)
    return [paths[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _read_shards(
    items: pa.Table,
    fs_uri: str,
    s3: storage.S3Options,
    fn: Any,
    fn_kwargs: dict[str, Any],
    chunk: int,
    with_path: bool,
) -> Iterator[dict[str, np.ndarray]]:
    """Stream the shards of ``items`` (column ``paths``, lists of shard paths) ``chunk`` rows at a
    time through ``fn``, reading ahead across shard boundaries."""
    import torch

    # One torch thread per decode task: parallelism comes from Ray tasks, not intra-op threads.
    torch.set_num_threads(1)
    fs, _ = storage.resolve(fs_uri, s3)  # one client per worker process (cached)
    paths = [p for group in items.column("paths").to_pylist() for p in group]
    for path, batch in _read_ahead(_record_batches(fs, paths, chunk)):
        table = pa.Table.from_batches([batch])
        if with_path:
            table = table.append_column("path", pa.array([path] * table.num_rows, pa.string()))
        yield fn(table, **fn_kwargs)


def _record_batches(fs: Any, paths: list[str], chunk: int) -> Iterator[tuple[str, pa.RecordBatch]]:
    """(shard path, record batch of ``chunk`` rows at most) of each shard of ``paths`` in turn."""
    for path in paths:
        with fs.open_input_file(path) as f:
            try:
                shard = pq.ParquetFile(f, pre_buffer=True)
            except pa.ArrowInvalid as exc:  # only the first shard's schema is checked when listing
                raise schema.SchemaError(f"manifest shard {path} is not a Parquet file: {exc}") from exc
            for batch in shard.iter_batches(batch_size=chunk, columns=list(schema.COLUMNS)):
                yield path, batch


def _read_ahead(items: Iterator[Any]) -> Iterator[Any]:
    """The items of ``items``, each pulled by a background thread while the caller works on the
    previous one: the next record batch comes from storage while this one decodes (pyarrow
    reads without the GIL). One item ahead at most; an error of ``items`` is raised here."""
    with ThreadPoolExecutor(1, thread_name_prefix="gair-read-ahead") as pool:
        pending = pool.submit(next, items, _END)
        while (item := pending.result()) is not _END:
            pending = pool.submit(next, items, _END)
            yield item


def manifest_rows(files: ManifestFiles, s3: storage.S3Options | None = None, *, threads: int = 16) -> int:
    """Rows of a manifest, from the Parquet footers of all its shards (read ``threads`` at a time)."""
    fs, _ = storage.resolve(files.uri, s3)

    def rows(path: str) -> int:
        with fs.open_input_file(path) as f:
            return pq.read_metadata(f).num_rows

    with ThreadPoolExecutor(max(1, min(threads, len(files.paths)))) as pool:
        return sum(pool.map(rows, files.paths))


def visits_per_row(
    files: ManifestFiles, obs_per_tile: int, s3: storage.S3Options | None = None, *, shards: int = 4
) -> float:
    """Mean training samples per manifest row with ``data.visit_all_observations``: ceil(N / K) (at
    least 1) for a row of N observations, over the rows of up to ``shards`` shards spread along
    the manifest (only the observations' ids are read). An estimate: unusable observations are not
    known before decoding."""
    fs, _ = storage.resolve(files.uri, s3)
    picks = sorted({int(i) for i in np.linspace(0, len(files.paths) - 1, min(shards, len(files.paths))).round()})
    counts = []
    for i in picks:
        with fs.open_input_file(files.paths[i]) as f:
            column = pq.ParquetFile(f).read(columns=["observations.list.element.obs_id"]).column(0)
        counts.append(pc.list_value_length(column).fill_null(0).to_numpy(zero_copy_only=False))
    n = np.concatenate(counts) if counts else np.zeros(0)
    return float(np.maximum(np.ceil(n / obs_per_tile), 1).mean()) if len(n) else 1.0


@dataclass(frozen=True)
class MixSource:
    """One manifest of ``data.train_manifests``, listed: its label, weight, files and row count."""

    label: str
    weight: float
    files: ManifestFiles
    rows: int


def list_sources(data_cfg: DataConfig) -> list[MixSource]:
    """List every manifest of ``data.train_manifests`` once (files, schema, rows from Parquet footers)."""
    s3 = storage.S3Options.from_config(data_cfg)
    labels = source_labels(data_cfg.train_manifests)
    out: list[MixSource] = []
    seen: dict[str, str] = {}
    fs_type = None
    for src, label in zip(data_cfg.train_manifests, labels, strict=True):
        files = list_manifest(src.uri, s3)
        fs, _ = storage.resolve(src.uri, s3)
        if fs_type is not None and type(fs) is not fs_type:
            raise ValueError(f"data.train_manifests: {src.uri} is not on the filesystem of the first manifest")
        fs_type = type(fs)
        for path in files.paths:
            if path in seen:
                raise ValueError(f"data.train_manifests: {path} is in both {seen[path]} and {label}")
            seen[path] = label
        rows = manifest_rows(files, s3)
        if rows == 0:
            raise ValueError(f"data.train_manifests: manifest {src.uri} holds no rows")
        out.append(MixSource(label, float(src.weight), files, rows))
    return out


def mix_rates(sources: list[MixSource]) -> list[float]:
    """Expected draws of each row of each source per epoch: ``round(w_i / W * T) / N_i`` (T = sum of N_i)."""
    total, weights = sum(s.rows for s in sources), sum(s.weight for s in sources)
    return [round(s.weight / weights * total) / s.rows for s in sources]


def mix_copies(seed: int, epoch: int, source: int, tile_id: str, rate: float) -> int:
    """How many times a row is drawn this epoch: floor(rate), plus one with probability frac(rate),
    from a hash of (seed, epoch, source, tile_id): the same on any worker, in any order."""
    whole = math.floor(rate)
    digest = hashlib.blake2b(f"{seed}/{epoch}/{source}/{tile_id}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "little") / 2**64
    return whole + (u < rate - whole)


def build_mixed_dataset(
    sources: list[MixSource], data_cfg: DataConfig, model_cfg: ModelConfig, *, epoch: int = 0
) -> ray.data.Dataset:
    """One training epoch of several manifests mixed by weight (``data.train_manifests``).

    The shards of all sources are read in one order drawn from (``data.seed``, epoch); each row
    of source i is decoded :func:`mix_copies` times (about ``round(w_i / W * T)`` tiles from source i,
    T the rows of all sources), each copy with its own augmentation; every sample carries its
    source's index in the column ``source``.
    """
    spec = decode_spec(data_cfg, model_cfg, train=True, epoch=epoch)
    configure_data_context(data_cfg, spec)
    tagged = [(path, i) for i, src in enumerate(sources) for path in src.files.paths]
    order = np.random.default_rng([data_cfg.seed, epoch]).permutation(len(tagged))
    paths = [tagged[k][0] for k in order]
    fn_kwargs = {
        "spec": spec,
        "source_of": dict(tagged),  # shard path -> source index (the column ``path`` holds these paths)
        "rates": mix_rates(sources),
    }
    return _read_and_decode(paths, sources[0].files.uri, data_cfg, _mix_decode_rows, fn_kwargs, with_path=True)


def _mix_decode_rows(
    table: pa.Table, spec: decode.DecodeSpec, source_of: dict[str, int], rates: list[float]
) -> dict[str, np.ndarray]:
    groups: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for row in table.to_pylist():
        i = source_of[row.pop("path")]
        for copy in range(mix_copies(spec.seed, spec.epoch, i, str(row.get("tile_id")), rates[i])):
            groups.setdefault((i, copy), []).append(row)
    parts = []
    for (i, copy), rows in sorted(groups.items()):
        out = decode.decode_rows(rows, dataclasses.replace(spec, copy=copy))
        out["source"] = np.full(len(out["ok"]), i, dtype=np.int64)
        parts.append(out)
    if not parts:
        out = decode.decode_rows([], spec)
        out["source"] = np.zeros(0, dtype=np.int64)
        return out
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


class EpochSplits:
    """The training data of every epoch, split among ``world_size`` workers.

    ``split(epoch, rank)`` is rank's ``DataIterator`` over ``build_dataset(epoch=epoch)``
    (``streaming_split(world_size, equal=True)``). The manifest is listed once. A rank asking
    again for an epoch it already has (a restarted worker group) gets a fresh split of it.
    Run it as a Ray actor (:func:`start_epoch_splits`) so every worker reaches the same one.

    A split's coordinator is a Ray actor of its own, and starting one costs seconds (a new
    process imports torch and this module: 5-7 s on 2 cores). So when an epoch's split is made,
    the next epoch's is made too (``warm``): its coordinator starts while this epoch runs and
    is idle until a rank pulls from it (Ray Data starts executing only then). With
    ``data.next_epoch_lookahead=0`` nothing is made ahead.
    """

    def __init__(
        self,
        manifest_uri: str,
        data_cfg: DataConfig,
        model_cfg: ModelConfig,
        world_size: int,
        *,
        exclude_cpus: float = 0.0,
    ) -> None:
        self.manifest_uri, self.data_cfg, self.model_cfg, self.world_size = (
            manifest_uri, data_cfg, model_cfg, world_size
        )  # fmt: skip
        self.exclude_cpus = exclude_cpus  # held by the trainers: not the pipeline's to plan with
        s3 = storage.S3Options.from_config(data_cfg)
        # Several manifests mixed by weight (data.train_manifests; manifest_uri is then unused).
        self.sources = list_sources(data_cfg) if data_cfg.mixed else None
        self.files = None if self.sources else list_manifest(manifest_uri, s3)
        self._splits: dict[int, tuple[list[Any], set[int]]] = {}
        # Each split's Dataset, held as long as its split: its input blocks (``from_items``) are owned
        # by this process and only borrowed by the split's coordinator actor. Dropped right after
        # ``streaming_split``, a CI run saw a decode task fail on one of them with Ray's
        # ReferenceCountingAssertionError ("already deleted by the reference counting protocol").
        self._datasets: dict[int, ray.data.Dataset] = {}
        # Each rank's batches per epoch, estimated in the background (reading every shard's footer
        # takes a while on a large manifest, and must not hold up the first epoch's splits).
        self._estimate: int | None = None  # set once, by that thread
        threading.Thread(target=self._estimate_batches, daemon=True, name="gair-epoch-estimate").start()

    def epoch_samples(self) -> int:
        """Samples in one training epoch, about (see :func:`manifest_rows`, :func:`visits_per_row`)."""
        cfg, s3 = self.data_cfg, storage.S3Options.from_config(self.data_cfg)

        def visits(files: ManifestFiles) -> float:
            return visits_per_row(files, cfg.obs_per_tile, s3) if cfg.visit_all_observations else 1.0

        if self.sources:  # rows drawn per source (mix_rates), each copy decoded with its visits
            rates = mix_rates(self.sources)
            return round(sum(s.rows * r * visits(s.files) for s, r in zip(self.sources, rates, strict=True)))
        assert self.files is not None
        return round(manifest_rows(self.files, s3) * visits(self.files))

    def _estimate_batches(self) -> None:
        try:
            samples = self.epoch_samples()
        except Exception as exc:  # noqa: BLE001 - only an estimate: without it, the first boundary waits more
            print(f"data: could not estimate the epoch's length ({type(exc).__name__}: {exc})", flush=True)
            self._estimate = 0
            return
        per_rank = samples // self.world_size // self.data_cfg.batch_size
        print(f"data: an epoch is about {samples} samples, {per_rank} batches a worker", flush=True)
        self._estimate = per_rank

    def batches_per_rank(self) -> int | None:
        """Each rank's batches per training epoch, estimated from the manifest before the first epoch
        ends (bad rows make the real count smaller); 0 when it could not be estimated, None while
        it is being estimated."""
        return self._estimate

    def split(self, epoch: int, rank: int) -> Any:
        iterators, taken = self._splits.get(epoch, (None, set()))
        if iterators is None or rank in taken:
            restart = iterators is not None
            iterators, taken = self._make(epoch)
            if restart:  # the later epochs some rank prefetched are void
                for later in [e for e in self._splits if e > epoch]:
                    self._drop(later)
        taken.add(rank)
        # Keep the previous epoch (a rank may still be finishing it), this one and the next.
        for old in [e for e in self._splits if e < epoch - 1 or e > epoch + 1]:
            self._drop(old)
        self.warm(epoch + 1)
        return iterators[rank]

    def warm(self, epoch: int) -> bool:
        """Make ``epoch``'s split ahead of its first ``split`` call (its coordinator starts now).

        Returns whether one was made. Nothing is made with ``data.next_epoch_lookahead=0``
        or when ``epoch`` already has one.
        """
        if not self.data_cfg.next_epoch_lookahead or epoch in self._splits:
            return False
        self._make(epoch)
        return True

    def _make(self, epoch: int) -> tuple[list[Any], set[int]]:
        if self.sources:
            ds = build_mixed_dataset(self.sources, self.data_cfg, self.model_cfg, epoch=epoch)
        else:
            ds = build_dataset(
                self.manifest_uri, self.data_cfg, self.model_cfg, train=True, epoch=epoch, files=self.files
            )
        if self.exclude_cpus:
            ds.context.execution_options.exclude_resources = ray.data.ExecutionResources(cpu=self.exclude_cpus)
        self._datasets[epoch] = ds
        self._splits[epoch] = (ds.streaming_split(self.world_size, equal=True), set())
        return self._splits[epoch]

    def _drop(self, epoch: int) -> None:
        del self._splits[epoch]
        self._datasets.pop(epoch, None)


def start_epoch_splits(
    manifest_uri: str, data_cfg: DataConfig, model_cfg: ModelConfig, world_size: int, *, exclude_cpus: float = 0.0
) -> Any:
    """An :class:`EpochSplits` actor (holds no CPU); its handle is picklable (a worker's loop config).

    ``exclude_cpus``: CPUs the trainers hold, which the pipeline must not plan to use.
    """
    actor = ray.remote(num_cpus=0)(EpochSplits)
    handle = actor.remote(manifest_uri, data_cfg, model_cfg, world_size, exclude_cpus=exclude_cpus)
    warm_decode_workers(data_cfg)
    # Most runs start at epoch 0: its coordinator starts while the trainers do. A run that
    # resumes at a later epoch leaves it idle until it is dropped (two epochs on).
    handle.warm.remote(0)
    return handle


def warm_decode_workers(data_cfg: DataConfig) -> list[Any]:
    """Start ``data.num_decode_workers`` worker processes for the read and decode tasks now.

    A Ray worker process that runs its first decode task imports torch and this module first
    (5-8 s on 2 cores), and the first batch of a run waits for it. These tasks ask for what a
    decode task asks for (so they run where decode runs), import this module and end; Ray keeps
    their idle processes and hands them the decode tasks. Returns their refs, each giving
    ``(node id, process id)``; nothing needs to wait for them.
    """
    task = ray.remote(_warm_worker).options(
        num_cpus=data_cfg.num_cpus_per_decode,
        resources=placement_resources(data_cfg) or None,
        # Ray Data's own strategy for its tasks (SPREAD): not captured by a caller's placement group.
        scheduling_strategy=ray.data.DataContext.get_current().scheduling_strategy,
    )
    return [task.remote() for _ in range(data_cfg.num_decode_workers)]


def _warm_worker() -> tuple[str, int]:
    import os  # noqa: PLC0415

    import torch  # noqa: F401, PLC0415  (what a decode task needs, and this module does not import)

    return ray.get_runtime_context().get_node_id(), os.getpid()


class EpochBatchSource:
    """``batches_for_epoch(epoch, skip_batches)`` for a training worker: its batches of that epoch.

    ``splits``: an :class:`EpochSplits` actor handle (or a local ``EpochSplits``, or any
    callable ``(epoch) -> dataset``-like source with ``iter_batches``). The next epoch's
    pipeline is started ``data.next_epoch_lookahead`` batches before the current one ends
    (its length is known from the previous epoch; in the first epoch, estimated from the
    manifest by ``splits.batches_per_rank()`` when it has one, else when the current one's
    source is exhausted), and its first batch waits in a background thread, so an epoch
    boundary does not restart the pipeline cold.
    """

    def __init__(
        self, splits: Any, data_cfg: DataConfig, model_cfg: ModelConfig, *, rank: int = 0, device: Any = None
    ) -> None:
        self.splits, self.data_cfg, self.model_cfg, self.rank, self.device = (
            splits, data_cfg, model_cfg, rank, device
        )  # fmt: skip
        self.epoch_length: int | None = None  # batches of the last whole epoch
        # Batches the run still needs (None: unknown). The next epoch is prefetched only when
        # the run will reach it: a run ending inside this epoch starts no pipeline it drops.
        self.batches_left: int | None = None
        self._next: tuple[int, _Prefetch] | None = None
        self.stats: BadRowStats | None = None  # of the current epoch
        # Batches per epoch estimated by the splits (EpochSplits.batches_per_rank) before the
        # first epoch ends: None not known yet, 0 none to be had.
        self.length_estimate: int | None = None
        self._estimate_ref: Any = None

    def close(self, wait_s: float = 120.0) -> None:
        """Drop a prefetched next epoch (its pipeline stops once nothing refers to it).

        ``wait_s``: how long to wait for its thread to end. A process that keeps using Ray
        after this (a driver, a test) must let it end; a Ray Train worker, whose process ends
        with its training function, need not wait (``wait_s=0``).
        """
        if self._next is not None:
            self._next[1].close(wait_s)
            self._next = None

    def source(self, epoch: int) -> Any:
        if isinstance(self.splits, EpochSplits):
            return self.splits.split(epoch, self.rank)
        if hasattr(self.splits, "split") and hasattr(self.splits.split, "remote"):
            return ray.get(self.splits.split.remote(epoch, self.rank))
        return self.splits(epoch)

    def _known_length(self) -> int | None:
        """Batches in an epoch: those of the last whole epoch, else the splits' estimate (asked
        without waiting: until it has come, None)."""
        if self.epoch_length is not None:
            return self.epoch_length
        if self.length_estimate is None:
            self.length_estimate = self._ask_estimate()
        return self.length_estimate or None

    def _ask_estimate(self) -> int | None:
        ask = getattr(self.splits, "batches_per_rank", None)
        if ask is None:
            return 0  # a plain callable source: no estimate
        if not hasattr(ask, "remote"):
            return ask()
        if self._estimate_ref is None:
            self._estimate_ref = ask.remote()
        ready, _ = ray.wait([self._estimate_ref], timeout=0)
        if not ready:
            return None
        value = ray.get(self._estimate_ref)
        self._estimate_ref = None  # None (still being estimated): asked again at the next batch
        return value

    def __call__(self, epoch: int, skip_batches: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        return self.batches_for_epoch(epoch, skip_batches)

    def batches_for_epoch(self, epoch: int, skip_batches: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        if self._next is not None and self._next[0] == epoch and skip_batches == 0:
            batches = self._next[1].take()
        else:
            if self._next is not None:
                self._next[1].close()
            batches = self._batches(epoch, skip_batches)
        self._next = None
        self.stats = batches.stats
        return self._watch(epoch, batches, skip_batches)

    def _batches(self, epoch: int, skip_batches: int) -> TrainingBatches:
        return TrainingBatches(
            self.source(epoch),
            self.data_cfg,
            self.model_cfg,
            device=self.device,
            skip_batches=skip_batches,
            epoch=epoch,
        )

    def _watch(self, epoch: int, batches: TrainingBatches, skip: int) -> Iterator[dict[str, torch.Tensor]]:
        lookahead = self.data_cfg.next_epoch_lookahead
        n = skip
        for batch in batches:
            yield batch
            n += 1
            if self.batches_left is not None:
                self.batches_left -= 1
            known = self._known_length() if lookahead and self._next is None else self.epoch_length
            in_epoch = max(known - n, 0) if known is not None else 0  # batches this epoch still has, about
            if (
                lookahead
                and self._next is None
                and ((known is not None and n >= known - lookahead) or batches.source_exhausted)
                and (self.batches_left is None or self.batches_left > in_epoch)
            ):
                self._next = (epoch + 1, _Prefetch(lambda: self._batches(epoch + 1, 0)))
        self.epoch_length = n


class _Prefetch:
    """Build an iterator and pull its first item in a background thread."""

    def __init__(self, make: Any) -> None:
        self._make = make
        self._result: tuple[Any, Any] | None = None
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, daemon=True, name="gair-next-epoch")
        self._thread.start()

    def _run(self) -> None:
        try:
            it = self._make()
            first = next(it, _END)
            if not self._closed:  # else drop it: its pipeline stops once nothing refers to it
                self._result = (it, first)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer's thread by take()
            self._error = exc

    def take(self) -> TrainingBatches:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        it, first = self._result
        if first is not _END:
            it.push_front(first)
        return it

    def close(self, timeout_s: float = 120.0) -> None:
        """Give up on the result; wait (up to ``timeout_s``) for the thread to end.

        The thread must not outlive a Ray connection its process keeps using: one still pulling
        from a Ray Data pipeline after ``ray.shutdown()`` makes Ray start a new local instance.
        """
        self._closed = True
        if timeout_s <= 0:
            return
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            print(f"data: the prefetch of the next epoch did not end within {timeout_s:.0f}s; leaving it")
        self._result = None


_END = object()


def _decode_batch(table: pa.Table, spec: decode.DecodeSpec) -> dict[str, np.ndarray]:
    """Decode ``table`` (``data.decode_batch_size`` rows of one shard) into one output batch."""
    return decode.decode_rows(table.to_pylist(), spec)


# ----------------------------------------------------------------------- iterating


class TrainingBatches(Iterator["dict[str, torch.Tensor]"]):
    """Iterator of training batches; ``.stats`` counts the rows seen and dropped so far."""

    def __init__(
        self,
        source: Any,
        data_cfg: DataConfig,
        model_cfg: ModelConfig,
        *,
        device: Any = None,
        skip_batches: int = 0,
        epoch: int = 0,
    ) -> None:
        self.data_cfg = data_cfg
        self.model_cfg = model_cfg
        import torch

        self.device = torch.device(device) if device is not None else None
        self.skip_batches = skip_batches
        self.epoch = epoch
        self.stats = BadRowStats()
        self.source_exhausted = False  # the Ray Data stream is done; what is left is buffered here
        self._front: list[dict[str, torch.Tensor]] = []
        self._batches = self._generate(source)

    def __next__(self) -> dict[str, torch.Tensor]:
        if self._front:
            return self._front.pop()
        return next(self._batches)

    def push_front(self, batch: dict[str, torch.Tensor]) -> None:
        """Put a batch back: it is the next one returned."""
        self._front.append(batch)

    def _generate(self, source: Any) -> Iterator[dict[str, torch.Tensor]]:
        cfg = self.data_cfg
        b = cfg.batch_size
        shuffle = cfg.shuffle_buffer if cfg.shuffle_buffer > 0 else None
        chunks = source.iter_batches(
            batch_size=b,
            batch_format="numpy",
            prefetch_batches=cfg.prefetch_batches,
            local_shuffle_buffer_size=shuffle,
            # The local shuffle draws anew each epoch, deterministically.
            local_shuffle_seed=cfg.seed * 1_000_003 + self.epoch if shuffle else None,
        )
        pending: list[dict[str, np.ndarray]] = []
        n_pending = 0
        emitted = 0
        for chunk, last in _with_last(chunks):
            self.source_exhausted = last  # what is left of the epoch is already here
            # The cheap last guard: no NaN/Inf reaches a batch, whatever decode let through.
            non_finite = decode.non_finite_rows(chunk) & chunk["ok"]
            if non_finite.any():
                chunk["ok"] = chunk["ok"] & ~non_finite
                chunk["bad_reason"] = np.where(
                    non_finite, f"{decode.Reason.NON_FINITE}: a batch row holds NaN or Inf", chunk["bad_reason"]
                )
            self.stats.add(chunk["tile_id"], chunk["ok"], chunk["bad_reason"])
            if "skipped_obs" in chunk:
                self.stats.add_skipped(chunk["skipped_obs"])
            if self.stats.seen >= cfg.min_rows_before_bad_check:
                self.stats.check(cfg.max_bad_fraction)
            keys = SAMPLE_KEYS + (("source",) if "source" in chunk else ())  # mixed manifests: each sample's
            ok = chunk["ok"]
            # All rows good (the usual case): take the arrays as they are, no masked copy.
            good = {k: chunk[k] for k in keys} if ok.all() else {k: chunk[k][ok] for k in keys}
            if len(good["rs"]):
                pending.append(good)
                n_pending += len(good["rs"])
            while n_pending >= b:
                batch, pending, n_pending = _take(pending, b)
                emitted += 1
                if emitted > self.skip_batches:
                    yield self._to_torch(batch)
        self.source_exhausted = True
        self.stats.check(cfg.max_bad_fraction)
        # A short final batch is dropped: every step has exactly batch_size tiles.

    def _to_torch(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        import torch

        out = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}
        source = out.pop("source", None)  # stays on the host: the loop only counts it
        # Indices of the real observations, found here on the host: the model selects them
        # without a data-dependent (host-synchronising) boolean index on the device.
        out["sv_index"] = torch.from_numpy(np.flatnonzero(np.asarray(batch["sv_mask"]).reshape(-1)))
        if self.device is not None:
            non_blocking = self.device.type == "cuda"
            out = {k: v.to(self.device, non_blocking=non_blocking) for k, v in out.items()}
        # Normalize street views on the consumer (and on the GPU when there is one): the
        # object store carries uint8, 4x less than float32.
        out["sv"] = transforms.normalize_sv(out["sv"], out["sv_mask"], self.data_cfg.sv_mean, self.data_cfg.sv_std)
        if source is not None:
            out["source"] = source
        return out


def _with_last(items: Any) -> Iterator[tuple[Any, bool]]:
    """(item, is it the last one): looks one item ahead, except for the first item (given at once,
    as not the last: the first batch of an epoch must not wait for the second)."""
    it = iter(items)
    current = next(it, _END)
    if current is _END:
        return
    yield current, False
    current = next(it, _END)
    while current is not _END:
        following = next(it, _END)
        yield current, following is _END
        current = following


def _take(
    pending: list[dict[str, np.ndarray]], n: int
) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]], int]:
    """The first ``n`` rows of the pending chunks, and what is left."""
    if len(pending) == 1:  # no concatenation (a copy of every array) for one chunk
        merged = pending[0]
    else:
        merged = {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
    batch = {k: v[:n] for k, v in merged.items()}
    rest = {k: v[n:] for k, v in merged.items()}
    left = len(rest["rs"])
    return batch, ([rest] if left else []), left


def iter_training_batches(
    data_iterator: Any,
    data_cfg: DataConfig,
    model_cfg: ModelConfig,
    *,
    device: Any = None,
    skip_batches: int = 0,
    epoch: int = 0,
) -> TrainingBatches:
    """Training batches (dicts of tensors, see docs/contracts.md) from a dataset shard.

    Args:
        data_iterator: what ``ray.train.get_dataset_shard("train")`` returns (a
            ``DataIterator``), or a ``ray.data.Dataset``.
        device: move tensors there (``"cuda"``); None keeps them on the CPU.
        skip_batches: drop this many batches first (resuming mid-epoch from a checkpoint).
        epoch: seeds the local shuffle (a new order each epoch, the same on resume).

    Raises:
        TooManyBadRowsError: when the fraction of unusable rows exceeds ``data_cfg.max_bad_fraction``.
    """
    return TrainingBatches(data_iterator, data_cfg, model_cfg, device=device, skip_batches=skip_batches, epoch=epoch)
