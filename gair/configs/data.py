"""Data-plane configuration (section ``data``): manifests, sampling density, decode parallelism."""

from __future__ import annotations

from dataclasses import dataclass

from gair.configs.base import field


@dataclass
class DataConfig:
    train_manifest: str = field(
        "", help="URI of the training manifest (directory of Parquet shards; local path, s3:// or gs://)."
    )
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
    decode_batch_size: int = field(16, help="Tiles per decode task call (Ray Data map_batches batch size).")
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

    def validate(self) -> None:
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
        if self.shuffle_buffer < 0 or self.prefetch_batches < 0 or self.next_epoch_lookahead < 0:
            raise ValueError("shuffle_buffer, prefetch_batches and next_epoch_lookahead must be >= 0")
        if any(s <= 0 for s in self.sv_std):
            raise ValueError("sv_std must be positive")
