"""Sweep configuration (``jobs/tune.py``): the base pretraining config, the search space,
the searcher, ASHA early stopping, concurrency, and where the sweep and its tracking go.

Every trial is a full pretraining run (``PretrainConfig``) built from ``base.config`` +
``base.overrides`` + the trial's sampled values, set by dotted key. A dimension of the
search space is either a list of ``values`` (a grid, or a categorical choice for random
and Optuna search) or a range ``low``..``high`` (log-uniform by default; random and Optuna
only); a dimension with neither is not swept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from gair.configs.base import field

Searcher = Literal["grid", "random", "optuna"]

# The named dimensions of SpaceConfig and the pretraining key each one sets.
NAMED_KEYS = {
    "temperature": "loss.temperature",
    "learnable_temperature": "loss.learnable_temperature",
    "obs_per_tile": "data.obs_per_tile",
    "extra_points": "data.extra_points",
}


@dataclass
class Dimension:
    values: list[Any] = field(
        default_factory=list, help="Values to try: a grid (searcher grid) or a categorical choice (random, optuna)."
    )
    low: float | None = field(None, help="Lower end of a range (random and optuna searchers only).")
    high: float | None = field(None, help="Upper end of a range (random and optuna searchers only).")
    log: bool = field(True, help="Sample the range log-uniformly (else uniformly).")
    integer: bool = field(False, help="Sample integers from the range (e.g. a number of points).")

    @property
    def swept(self) -> bool:
        return bool(self.values) or self.low is not None

    def validate(self) -> None:
        if (self.low is None) != (self.high is None):
            raise ValueError("a range needs both low and high")
        if self.values and self.low is not None:
            raise ValueError("give either values or a low..high range, not both")
        if self.low is not None and self.high is not None:
            if not self.low < self.high:
                raise ValueError(f"need low < high, got {self.low}..{self.high}")
            if self.log and self.low <= 0:
                raise ValueError("a log-uniform range needs low > 0")


@dataclass
class KeyedDimension(Dimension):
    key: str = field("", help="Dotted pretraining config key this dimension sets (e.g. optim.lr).")

    def validate(self) -> None:
        if not self.key:
            raise ValueError("space.other entries need a key (a dotted pretraining config key)")
        super().validate()


@dataclass
class SpaceConfig:
    temperature: Dimension = field(
        default_factory=Dimension,
        help="loss.temperature: fixed values (e.g. values: [0.03, 0.07, 0.2]) or a log-uniform range "
        "(low: 0.01, high: 0.5). With learnable_temperature it is the initial value.",
    )
    learnable_temperature: Dimension = field(
        default_factory=Dimension, help="loss.learnable_temperature: values [false], [true] or [false, true]."
    )
    obs_per_tile: Dimension = field(
        default_factory=Dimension, help="data.obs_per_tile (K street views per tile per step): values or a range."
    )
    extra_points: Dimension = field(
        default_factory=Dimension,
        help="data.extra_points (M extra random query points per tile: the INR sampling density).",
    )
    other: list[KeyedDimension] = field(
        default_factory=list,
        help="Any other pretraining key by dotted name, e.g. [{key: optim.lr, low: 1e-4, high: 3e-3}].",
    )

    def dimensions(self) -> dict[str, Dimension]:
        """Dotted pretraining key -> dimension, for every swept dimension."""
        out = {key: getattr(self, name) for name, key in NAMED_KEYS.items() if getattr(self, name).swept}
        for dim in self.other:
            if dim.key in out:
                raise ValueError(f"space sets {dim.key} twice")
            if dim.swept:
                out[dim.key] = dim
        return out


@dataclass
class BaseConfig:
    config: str = field(
        "configs/pretrain_smoke.yaml",
        help="The pretraining config file every trial starts from (relative to the working directory).",
    )
    overrides: list[str] = field(
        default_factory=list,
        help="--set style overrides applied to that file first, e.g. ['train.max_steps=2000', 'train.val_every=200'].",
    )


@dataclass
class SearchConfig:
    searcher: Searcher = field(
        "grid",
        help="grid: every combination of the values (num_samples times); random: num_samples random draws; "
        "optuna: num_samples trials suggested by Optuna's TPE from the results so far.",
    )
    num_samples: int = field(1, help="grid: repeats of the whole grid; random and optuna: the number of trials.")
    metric: str = field(
        "val_recall_at_5",
        help="Metric the trials are compared on (ASHA, Optuna, the best config): val_recall_at_1, "
        "val_recall_at_5, val_median_rank, val_loss or any other reported metric. Recall does not depend "
        "on the temperature; val_loss does (compare it only at a fixed temperature).",
    )
    mode: Literal["max", "min"] = field("max", help="Whether a larger (max) or smaller (min) metric is better.")
    seed: int = field(0, help="Seed of the random and Optuna searchers.")

    def validate(self) -> None:
        if self.num_samples < 1:
            raise ValueError("num_samples must be >= 1")
        if not self.metric:
            raise ValueError("metric must be non-empty")


@dataclass
class ASHAConfig:
    enabled: bool = field(True, help="Stop poorly performing trials early with ASHA (else run every trial to the end).")
    grace_period: int = field(
        100,
        help="Optimizer steps a trial runs before ASHA may stop it (its first rung); a multiple of train.val_every.",
    )
    reduction_factor: float = field(
        3.0, help="Keep the top 1/reduction_factor of trials at each rung (grace_period x reduction_factor^i steps)."
    )
    max_t: int = field(0, help="Optimizer steps of a full trial for ASHA's rungs (0 = train.max_steps of the base).")

    def validate(self) -> None:
        if self.grace_period < 1 or self.max_t < 0:
            raise ValueError("grace_period must be >= 1 and max_t >= 0")
        if self.reduction_factor <= 1:
            raise ValueError("reduction_factor must be > 1")


@dataclass
class ResourcesConfig:
    max_concurrent_trials: int = field(
        0,
        help="Trials running at once (0 = as many as the cluster's CPUs and GPUs hold: each trial needs "
        "train.num_workers x (train.cpus_per_worker CPUs, 1 GPU if train.use_gpu), its decode tasks and 1 CPU "
        "for reading files).",
    )
    trial_cpus: float = field(
        0.0,
        help="CPUs reserved for each trial's driver function (it only starts the TorchTrainer and waits; "
        "reserving none leaves whole CPUs to Ray Data's 1-CPU read tasks).",
    )

    def validate(self) -> None:
        if self.max_concurrent_trials < 0 or self.trial_cpus < 0:
            raise ValueError("max_concurrent_trials and trial_cpus must be >= 0")


@dataclass
class SweepRunConfig:
    name: str = field(
        "gair-sweep",
        help="Sweep name: rerunning with the same name and storage resumes the sweep (finished trials "
        "are kept, unfinished ones continue from their latest checkpoint).",
    )
    storage_path: str = field(
        "",
        help="Where the sweep's state, the trials' checkpoints and the outputs go: local path or s3:// URI "
        "(empty = the base config's run.storage_path). Layout: <storage>/<name>/{tune,trials,output}.",
    )
    output_dir: str = field(
        "", help="Local directory for the results table, best config and plots (empty = ./runs/<name>)."
    )

    def validate(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"run.name must be non-empty and contain no '/', got {self.name!r}")


@dataclass
class SweepMLflowConfig:
    experiment: str = field(
        "", help="MLflow experiment of the parent and child runs (empty = the base config's mlflow.experiment)."
    )


@dataclass
class SweepConfig:
    base: BaseConfig = field(default_factory=BaseConfig, help="The pretraining config every trial starts from.")
    space: SpaceConfig = field(default_factory=SpaceConfig, help="The search space.")
    search: SearchConfig = field(default_factory=SearchConfig, help="Searcher, trials and the metric.")
    asha: ASHAConfig = field(default_factory=ASHAConfig, help="ASHA early stopping (in optimizer steps).")
    resources: ResourcesConfig = field(default_factory=ResourcesConfig, help="Concurrency and per-trial resources.")
    run: SweepRunConfig = field(default_factory=SweepRunConfig, help="Sweep name (resume key) and storage.")
    mlflow: SweepMLflowConfig = field(
        default_factory=SweepMLflowConfig,
        help="Tracking (URI and on/off come from the base config's mlflow section).",
    )

    def validate(self) -> None:
        dims = self.space.dimensions()
        if not dims:
            raise ValueError("the search space is empty: give values or a range for at least one dimension")
        if self.search.searcher == "grid":
            ranged = [k for k, d in dims.items() if not d.values]
            if ranged:
                raise ValueError(f"searcher grid needs values, not ranges, for {ranged} (use random or optuna)")
