"""Data-plane configuration (section ``data``): manifests, sampling density, decode parallelism."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from gair.configs.base import field

DecodePlacement = Literal["auto", "require", "anywhere"]

MIX_HELP = (
    "Several training manifests mixed by weight, instead of data.train_manifest (set one or the other): a list "
    "of {uri, weight, name} (name optional: the label in the progress line, else derived from the URI). On the "
    "command line: data.train_manifests=URI:WEIGHT,[NAME=]URI:WEIGHT (weight optional, 1; or a YAML flow list). "
    "Each epoch has as many tiles as all the manifests hold together (T = sum of N_i); manifest i contributes "
    "about n_i = round(weight_i / sum of weights x T) tiles: every one of its rows floor(n_i / N_i) times, plus "
    "once more with probability frac(n_i / N_i), decided by a hash of (data.seed, epoch, i, tile_id) (without "
    "replacement up to its size, with whole extra copies beyond it; each copy draws its own augmentation). So "
    "every epoch draws anew, deterministically from (seed, epoch), and a resumed epoch is the same. The shards "
    "of all manifests are read interleaved in one order drawn from (seed, epoch); all must be on the same "
    "filesystem (all local or all S3). Tiles seen per manifest show as tiles_<name>=N in the progress line."
)


@dataclass
class ManifestSource:
    """One entry of ``data.train_manifests``: a manifest URI, its sampling weight, an optional label."""

    uri: str = field("", help="URI of the manifest (directory of Parquet shards; local path or s3://).")
    weight: float = field(1.0, help="Sampling weight (> 0), relative to the other entries.")
    name: str = field("", help="Label in the progress line (tiles_<name>=N); empty: derived from the URI.")

    @classmethod
    def parse(cls, text: str) -> ManifestSource:
        """``[NAME=]URI[:WEIGHT]`` (the command-line form of one entry)."""
        text = text.strip()
        name = ""
        head, eq, rest = text.partition("=")
        if eq and "/" not in head and ":" not in head:
            name, text = head.strip(), rest.strip()
        uri, weight = text, 1.0
        base, colon, tail = text.rpartition(":")
        if colon and base and "/" not in tail:
            try:
                weight = float(tail)
            except ValueError:
                raise ValueError(f"manifest entry {text!r}: weight {tail!r} is not a number (URI:WEIGHT)") from None
            uri = base
        return cls(uri=uri.strip(), weight=weight, name=name)

    def validate(self) -> None:
        if not self.uri.strip():
            raise ValueError("a train_manifests entry has an empty uri")
        if not self.weight > 0:  # also rejects NaN
            raise ValueError(f"train_manifests entry {self.uri}: weight must be > 0, got {self.weight}")
        if self.name and not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name):
            raise ValueError(f"train_manifests entry {self.uri}: name {self.name!r} may hold only A-Z a-z 0-9 _ . -")


def source_labels(sources: list[ManifestSource]) -> list[str]:
    """A short unique label per source: its ``name``, else the last part of its URI that is not
    ``manifest``/``*.parquet`` (``s3://b/naip/v2/manifest`` -> ``v2``), made unique with ``_<i>``."""
    labels = []
    for i, src in enumerate(sources):
        label = src.name
        if not label:
            parts = [p for p in re.split(r"[/\\]+", src.uri.split("://", 1)[-1]) if p]
            keep = [p for p in parts if p.lower() != "manifest" and not p.lower().endswith(".parquet")]
            label = re.sub(r"[^A-Za-z0-9_.-]+", "_", keep[-1] if keep else "") or f"src{i}"
        labels.append(label)
    return [f"{lab}_{i}" if labels.count(lab) > 1 else lab for i, lab in enumerate(labels)]


def _coerce_sources(value: Any) -> Any:
    """The command-line form (``URI:W,URI:W`` or a list of such strings) as a list of entries."""
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if isinstance(value, list):
        return [ManifestSource.parse(v) if isinstance(v, str) else v for v in value]
    return value


@dataclass
class DataConfig:
    train_manifest: str = field(
        "", help="URI of the training manifest (directory of Parquet shards; local path, s3:// or gs://)."
    )
    train_manifests: list[ManifestSource] = field(default_factory=list, help=MIX_HELP)
    val_manifest: str = field("", help="URI of the validation manifest; empty for none.")
    batch_size: int = field(32, help="RS tiles per worker per step (B).")
    obs_per_tile: int = field(
        4, help="Street-view observations per tile per step (K); fewer are padded, more are sampled."
    )
    extra_points: int = field(16, help="Extra random query points per tile per step (M): the INR sampling density.")
    augment: bool = field(
        True, help="Geometry-consistent RS crop/flip (query points move with it) and SV horizontal flip, training only."
    )
    crop_min_scale: float = field(0.7, help="Smallest RS crop side as a fraction of the tile side (augmentation).")
    rs_flip: bool = field(
        True, help="Random RS flips (query points move with them) when augmenting; the reference has none."
    )
    rs_color_jitter_p: float = field(
        0.0,
        help="Probability of ColorJitter(brightness, contrast = data.rs_color_jitter) on the three bands "
        "data.rs_color_jitter_bands of a training RS tile (0 = off; the reference: 0.7).",
    )
    rs_color_jitter: tuple[float, float] = field((0.2, 0.2), help="RS colour jitter (brightness, contrast) strengths.")
    rs_color_jitter_bands: tuple[str, str, str] = field(
        ("B3", "B4", "B5"),
        help="The three RS bands jittered together. The reference jitters indices (1, 2, 3) of its 10-band "
        "tensor, which are B3, B4, B5 (its comment meant B2, B3, B4).",
    )
    sv_color_jitter_p: float = field(
        0.0,
        help="Probability of ColorJitter(data.sv_color_jitter) on a training street view, applied in [0, 1] "
        "before normalization (0 = off; the reference: 0.3).",
    )
    sv_color_jitter: tuple[float, float, float, float] = field(
        (0.1, 0.1, 0.1, 0.1), help="Street-view colour jitter (brightness, contrast, saturation, hue) strengths."
    )
    max_bad_fraction: float = field(
        0.01, help="Stop with TooManyBadRowsError when more than this fraction of rows seen is unusable."
    )
    max_nodata_fraction: float = field(
        0.5,
        help="Skip (and count as rs_nodata) a tile with more than this fraction of pixels that are the GeoTIFF's "
        "nodata value, NaN or Inf; below it such pixels are filled with 0.",
    )
    visit_all_observations: bool = field(
        True,
        help="Training epochs present every street view once: a tile with N observations is visited ceil(N / K) "
        "times per epoch with disjoint observations (each visit its own crop and extra points); False: one visit "
        "per tile per epoch with K observations sampled.",
    )
    min_rows_before_bad_check: int = field(
        200, help="Rows to see before judging the bad fraction mid-stream (it is always judged at the end)."
    )
    seed: int = field(0, help="Seed of shuffling, observation sampling, extra points and augmentation.")
    deterministic: bool = field(
        True, help="Preserve block order through the pipeline so a seed gives the same batches (slightly slower)."
    )
    shuffle_buffer: int = field(256, help="Rows in the local shuffle buffer of the training iterator (0: no shuffle).")
    num_decode_workers: int = field(
        2,
        help="Concurrent read+decode tasks (Parquet read, GeoTIFF + JPEG decode, resize; one fused task) per dataset.",
    )
    num_cpus_per_decode: float = field(1.0, help="CPUs reserved by each decode task.")
    decode_resource: str = field(
        "preprocess",
        help="Custom Ray resource that marks CPU-only preprocessing nodes (the cluster files' CPU worker group "
        "offers it). Read and decode tasks that use it each ask for data.decode_resource_per_task of it, so Ray "
        "runs them only on such nodes and the GPU nodes' CPUs stay with the trainers.",
    )
    decode_placement: DecodePlacement = field(
        "auto",
        help="Where read and decode tasks run. auto: on data.decode_resource nodes when a live node offers that "
        "resource, else anywhere (said in one log line); require: always on such nodes (an autoscaling cluster "
        "starts one from its CPU group; with none and no autoscaler the pipeline waits); anywhere: on any node.",
    )
    decode_resource_per_task: float = field(
        0.001,
        help="Amount of data.decode_resource each read or decode task asks for: a sliver, so it only picks the "
        "node (CPUs, via data.num_cpus_per_decode, still limit how many run).",
    )
    decode_batch_size: int = field(
        16, help="Tiles a read+decode task reads from its shard and decodes at a time (one output batch each)."
    )
    tasks_per_decode_worker: int = field(
        2,
        help="Read+decode tasks per decode worker and epoch: consecutive shards are grouped into about "
        "num_decode_workers x this many tasks, each reading its next shard while it decodes the last rows of the "
        "current one (only a task's first shard is waited for). More tasks balance the workers' load better, "
        "fewer wait less for reads (0: one task per shard).",
    )
    prefetch_batches: int = field(2, help="Training batches the iterator prefetches.")
    next_epoch_lookahead: int = field(
        8,
        help="Start the next epoch's pipeline this many batches before the current epoch ends, so an epoch "
        "boundary does not wait for a cold start (0: start it at the boundary).",
    )
    sv_mean: tuple[float, float, float] = field(
        (0.5312621, 0.5579852, 0.5691087),
        help="Street-view per-channel mean (images in [0, 1]); default: the reference GAIR's statistics.",
    )
    sv_std: tuple[float, float, float] = field(
        (0.2321560, 0.2327560, 0.2824430), help="Street-view per-channel std (the reference GAIR's statistics)."
    )
    s3_endpoint_url: str = field("", help="S3-compatible endpoint URL; empty: AWS_ENDPOINT_URL from the environment.")
    s3_region: str = field("", help="S3 region; empty: AWS_REGION / AWS_DEFAULT_REGION, else us-east-1.")
    gcs_endpoint_url: str = field(
        "",
        help="gs:// endpoint, http(s)://host[:port] (e.g. a GCS emulator such as fake-gcs-server); empty: "
        "STORAGE_EMULATOR_HOST from the environment, else Google Cloud Storage. A plain-http endpoint is "
        "reached anonymously, any other with Google's default credentials (GOOGLE_APPLICATION_CREDENTIALS).",
    )

    def __post_init__(self) -> None:
        self.train_manifests = _coerce_sources(self.train_manifests)

    @property
    def mixed(self) -> bool:
        """Several manifests mixed by weight (``data.train_manifests``)."""
        return bool(self.train_manifests)

    def validate(self) -> None:
        if self.train_manifests and self.train_manifest:
            raise ValueError("set data.train_manifest or data.train_manifests, not both")
        for src in self.train_manifests:
            if not isinstance(src, ManifestSource):
                raise ValueError(f"train_manifests entries must be {{uri, weight}} mappings, got {src!r}")
            src.validate()
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.obs_per_tile < 1:
            raise ValueError("obs_per_tile must be >= 1")
        if self.extra_points < 0:
            raise ValueError("extra_points must be >= 0")
        if not 0.0 <= self.max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction must be in [0, 1], got {self.max_bad_fraction}")
        if not (0.0 <= self.rs_color_jitter_p <= 1.0 and 0.0 <= self.sv_color_jitter_p <= 1.0):
            raise ValueError("rs_color_jitter_p and sv_color_jitter_p must be in [0, 1]")
        if any(v < 0 for v in (*self.rs_color_jitter, *self.sv_color_jitter)) or self.sv_color_jitter[3] > 0.5:
            raise ValueError("colour jitter strengths must be >= 0 (hue <= 0.5)")
        if not 0.0 <= self.max_nodata_fraction <= 1.0:
            raise ValueError(f"max_nodata_fraction must be in [0, 1], got {self.max_nodata_fraction}")
        if not 0.0 < self.crop_min_scale <= 1.0:
            raise ValueError(f"crop_min_scale must be in (0, 1], got {self.crop_min_scale}")
        if self.num_decode_workers < 1 or self.decode_batch_size < 1:
            raise ValueError("num_decode_workers and decode_batch_size must be >= 1")
        if self.num_cpus_per_decode <= 0:
            raise ValueError("num_cpus_per_decode must be > 0")
        if self.decode_placement != "anywhere" and not self.decode_resource.strip():
            raise ValueError(f"decode_placement={self.decode_placement} needs a decode_resource name")
        if self.decode_resource in ("CPU", "GPU", "memory", "object_store_memory"):
            raise ValueError(f"decode_resource must be a custom resource, not {self.decode_resource!r}")
        if self.decode_resource_per_task <= 0:
            raise ValueError("decode_resource_per_task must be > 0")
        if min(self.shuffle_buffer, self.prefetch_batches, self.next_epoch_lookahead, self.tasks_per_decode_worker) < 0:
            raise ValueError(
                "shuffle_buffer, prefetch_batches, next_epoch_lookahead and tasks_per_decode_worker must be >= 0"
            )
        if any(s <= 0 for s in self.sv_std):
            raise ValueError("sv_std must be positive")
