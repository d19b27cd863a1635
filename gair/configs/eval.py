"""Evaluation configuration (``jobs/evaluate.py``): which tasks, their inputs, probes, extraction.

Sections: ``extract`` (Ray Data embedding extraction), ``retrieval``, ``location``,
``rs_probe``, ``sv_probe``, ``report`` and ``mlflow``. Each task has ``enabled``; a task
whose input (manifest or CSV) is empty is an error when enabled, never silently skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gair.configs.base import field
from gair.sensors import S2_BANDS_12

RetrievalMode = Literal["nili", "bilinear", "bicubic", "global"]
Probe = Literal["ridge", "mlp"]


@dataclass
class ExtractConfig:
    batch_size: int = field(16, help="Rows (tiles or CSV images) per map_batches call of the embedding actors.")
    num_workers: int = field(1, help="Embedding actors (each holds one copy of the model).")
    num_cpus_per_worker: float = field(1.0, help="CPUs reserved by each embedding actor.")
    num_gpus_per_worker: float = field(0.0, help="GPUs per embedding actor (> 0 runs the model on CUDA).")
    torch_threads: int = field(0, help="torch intra-op threads per actor; 0: num_cpus_per_worker rounded up.")
    sv_mean: tuple[float, ...] = field(
        (),
        help="Street-view per-channel mean (images in [0, 1]). Empty: the statistics the model was trained "
        "with (its config.json), else the data defaults.",
    )
    sv_std: tuple[float, ...] = field((), help="Street-view per-channel std. Empty: as for sv_mean.")
    s3_endpoint_url: str = field("", help="S3-compatible endpoint URL; empty: AWS_ENDPOINT_URL from the environment.")
    s3_region: str = field("", help="S3 region; empty: AWS_REGION / AWS_DEFAULT_REGION, else us-east-1.")
    gcs_endpoint_url: str = field(
        "",
        help="gs:// endpoint, http(s)://host[:port] (e.g. a GCS emulator such as fake-gcs-server); empty: "
        "STORAGE_EMULATOR_HOST from the environment, else Google Cloud Storage. A plain-http endpoint is "
        "reached anonymously, any other with Google's default credentials (GOOGLE_APPLICATION_CREDENTIALS).",
    )
    progress_every_s: float = field(5.0, help="Seconds between progress lines while extracting.")

    def validate(self) -> None:
        if self.batch_size < 1 or self.num_workers < 1:
            raise ValueError("batch_size and num_workers must be >= 1")
        if self.num_cpus_per_worker <= 0 or self.num_gpus_per_worker < 0:
            raise ValueError("num_cpus_per_worker must be > 0 and num_gpus_per_worker >= 0")
        if len(self.sv_mean) not in (0, 3) or len(self.sv_std) not in (0, 3):
            raise ValueError("sv_mean and sv_std need 3 values (one per RGB channel), or none")
        if any(s <= 0 for s in self.sv_std):
            raise ValueError("sv_std must be positive")


@dataclass
class RetrievalConfig:
    enabled: bool = field(True, help="Run localized RS -> SV retrieval on a held-out manifest.")
    manifest: str = field("", help="Held-out manifest URI (directory of Parquet shards; local path or s3://).")
    modes: tuple[RetrievalMode, ...] = field(
        ("nili", "bilinear", "global"),
        help="Query features compared: nili, bilinear, bicubic (local RS feature at the SV location) "
        "and global (mean RS embedding of the tile, the same for every SV of a tile).",
    )
    max_obs_per_tile: int = field(
        32, help="Observations used per tile (the first ones); a tile with more has the rest left out."
    )
    max_tiles: int = field(0, help="Evaluate at most this many tiles (the first ones); 0: all.")
    ks: tuple[int, ...] = field((1, 5, 10), help="k of recall@k.")
    examples: int = field(6, help="Queries shown in the retrieval example grid (0: no grid).")
    top_k_shown: int = field(5, help="Retrieved street views shown per example query.")

    def validate(self) -> None:
        if not self.modes:
            raise ValueError("retrieval.modes must name at least one mode")
        if self.max_obs_per_tile < 1 or self.max_tiles < 0:
            raise ValueError("max_obs_per_tile must be >= 1 and max_tiles >= 0")
        if not self.ks or min(self.ks) < 1:
            raise ValueError("retrieval.ks must be positive integers")
        if self.examples < 0 or self.top_k_shown < 1:
            raise ValueError("examples must be >= 0 and top_k_shown >= 1")


@dataclass
class ProbeConfig:
    """A probe on frozen features, fitted and scored with k-fold cross-validation."""

    probe: Probe = field("ridge", help="ridge: (logistic) ridge regression; mlp: a small sklearn MLP.")
    alphas: tuple[float, ...] = field(
        (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0),
        help="Ridge strengths tried by inner cross-validation (regression: alpha; classification: C = 1/alpha).",
    )
    hidden: tuple[int, ...] = field((256, 256), help="Hidden layer widths of the MLP probe.")
    max_iter: int = field(500, help="Iterations of the MLP / logistic solver.")
    k_folds: int = field(5, help="Folds of the outer cross-validation (scores are out-of-fold).")
    seed: int = field(0, help="Seed of the fold split and the MLP initialisation.")

    def validate(self) -> None:
        if self.k_folds < 2:
            raise ValueError("k_folds must be >= 2")
        if not self.alphas or min(self.alphas) <= 0:
            raise ValueError("alphas must be positive")
        if not self.hidden or min(self.hidden) < 1 or self.max_iter < 1:
            raise ValueError("hidden widths and max_iter must be >= 1")


@dataclass
class LocationConfig:
    enabled: bool = field(True, help="Regress a target on location embeddings (air temperature by default).")
    csv: str = field(
        "../shared/data/satclip-s2/air_temperature_stations.csv",
        help="CSV of points (local path or s3://); relative paths are relative to the working directory.",
    )
    lon_column: str = field("Lon", help="Longitude column (degrees).")
    lat_column: str = field("Lat", help="Latitude column (degrees).")
    target_column: str = field("meanT", help="Regression target column (mean annual air temperature, deg C).")
    probe: ProbeConfig = field(default_factory=ProbeConfig, help="The probe, also fitted on raw (lon, lat).")
    map_resolution_deg: float = field(2.0, help="Grid step of the world map of location embeddings (degrees).")
    batch_size: int = field(4096, help="Points per location-encoder call.")

    def validate(self) -> None:
        if self.map_resolution_deg <= 0 or self.batch_size < 1:
            raise ValueError("map_resolution_deg must be > 0 and batch_size >= 1")


@dataclass
class RSProbeConfig:
    enabled: bool = field(False, help="Linear probe on global RS embeddings of tiles listed in a CSV.")
    csv: str = field("", help="CSV with a tile URI column and a label column (local path or s3://).")
    uri_column: str = field("uri", help="Column of GeoTIFF paths/URIs (relative paths: relative to the CSV).")
    label_column: str = field("label", help="Column of class labels.")
    band_names: tuple[str, ...] = field(
        S2_BANDS_12, help="Band names of the GeoTIFFs in band order (the model's bands are picked from these)."
    )
    probe: ProbeConfig = field(default_factory=ProbeConfig, help="The probe, also fitted on per-band statistics.")

    def validate(self) -> None:
        if not self.band_names:
            raise ValueError("band_names must not be empty")


@dataclass
class SVProbeConfig:
    enabled: bool = field(False, help="Probe on street-view embeddings of images listed in a CSV.")
    csv: str = field("", help="CSV with an image URI column and a target column (local path or s3://).")
    uri_column: str = field("uri", help="Column of image paths/URIs (relative paths: relative to the CSV).")
    target_column: str = field("target", help="Column of targets (class labels or numbers).")
    task: Literal["classification", "regression"] = field(
        "classification", help="classification (accuracy, macro-F1) or regression (R^2, RMSE)."
    )
    probe: ProbeConfig = field(default_factory=ProbeConfig, help="The probe, also fitted on raw 8x8 RGB thumbnails.")


@dataclass
class ReportConfig:
    output_dir: str = field("./runs/eval", help="Local folder for the report, metrics JSON and plots.")
    plots: bool = field(True, help="Draw the plots (retrieval grid, world map, predicted vs true).")


@dataclass
class EvalMLflowConfig:
    enabled: bool = field(True, help="Log the evaluation to MLflow.")
    tracking_uri: str = field(
        "", help="MLflow tracking URI; empty: MLFLOW_TRACKING_URI, else a local sqlite store (./mlflow.db)."
    )
    experiment: str = field(
        "", help="Experiment of the evaluation run; empty: the evaluated model's training experiment (else gair-eval)."
    )
    run_name: str = field("", help="Name of the evaluation run; empty: eval-<model>.")
    nest_under_source: bool = field(
        True,
        help="Make the evaluation a child run of the model's training run (same experiment only); the "
        "source run id and model URI are tagged either way.",
    )


@dataclass
class EvalConfig:
    model: str = field(
        "", help="Model URI: models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/PATH or a local export."
    )
    seed: int = field(0, help="Seed of everything random in the evaluation.")
    extract: ExtractConfig = field(default_factory=ExtractConfig, help="Embedding extraction with Ray Data.")
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig, help="Localized RS -> SV retrieval.")
    location: LocationConfig = field(default_factory=LocationConfig, help="Location regression.")
    rs_probe: RSProbeConfig = field(default_factory=RSProbeConfig, help="Probe on RS tiles.")
    sv_probe: SVProbeConfig = field(default_factory=SVProbeConfig, help="Probe on street views.")
    report: ReportConfig = field(default_factory=ReportConfig, help="Report and plots.")
    mlflow: EvalMLflowConfig = field(default_factory=EvalMLflowConfig, help="Experiment tracking.")

    def validate(self) -> None:
        needs = [
            ("retrieval", self.retrieval.enabled, self.retrieval.manifest, "retrieval.manifest"),
            ("location", self.location.enabled, self.location.csv, "location.csv"),
            ("rs_probe", self.rs_probe.enabled, self.rs_probe.csv, "rs_probe.csv"),
            ("sv_probe", self.sv_probe.enabled, self.sv_probe.csv, "sv_probe.csv"),
        ]
        for task, enabled, value, key in needs:
            if enabled and not value:
                raise ValueError(f"task {task} is enabled but {key} is empty (set it, or {task}.enabled=false)")
        if not any(enabled for _, enabled, _, _ in needs):
            raise ValueError("no task is enabled")

    @property
    def tasks(self) -> list[str]:
        return [
            name
            for name, on in [
                ("retrieval", self.retrieval.enabled),
                ("location", self.location.enabled),
                ("rs_probe", self.rs_probe.enabled),
                ("sv_probe", self.sv_probe.enabled),
            ]
            if on
        ]
