"""Pretraining configuration: optimizer, loop, run identity/storage, MLflow, and the whole job.

``PretrainConfig`` is the top-level config of ``jobs/pretrain.py``; its sections are
``model``, ``loss``, ``data``, ``optim``, ``train``, ``run`` and ``mlflow``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gair.configs.base import field
from gair.configs.data import DataConfig
from gair.configs.model import LossConfig, ModelConfig

Precision = Literal["fp32", "bf16", "fp16"]


@dataclass
class OptimConfig:
    lr: float = field(
        1.5e-4, help="Peak learning rate after warmup, used when optim.base_lr is 0 (a fixed learning rate)."
    )
    base_lr: float = field(
        0.0,
        help="If > 0, the peak learning rate is base_lr x effective batch / 256, effective batch = data.batch_size "
        "x train.grad_accum_steps x train.num_workers (the reference: blr 1.5e-6), and optim.lr is ignored.",
    )
    min_lr: float = field(0.0, help="Learning rate at the end of the cosine decay.")
    weight_decay: float = field(0.05, help="AdamW weight decay; biases, norms and other 1-d parameters get none.")
    betas: tuple[float, float] = field((0.9, 0.95), help="AdamW (beta1, beta2).")
    eps: float = field(1e-8, help="AdamW epsilon.")
    warmup_steps: int = field(100, help="Linear warmup from 0 to optim.lr over this many optimizer steps.")
    schedule: Literal["cosine", "constant"] = field(
        "cosine", help="After warmup: half-cycle cosine to optim.min_lr at train.max_steps, or constant."
    )

    def validate(self) -> None:
        if self.base_lr < 0:
            raise ValueError(f"base_lr must be >= 0, got {self.base_lr}")
        if self.lr <= 0 or self.min_lr < 0:
            raise ValueError(f"need 0 <= min_lr <= lr and lr > 0, got lr={self.lr}, min_lr={self.min_lr}")
        if self.weight_decay < 0:
            raise ValueError("weight_decay must be >= 0")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be in [0, 1), got {self.betas}")
        if self.warmup_steps < 0:
            raise ValueError("warmup_steps must be >= 0")


@dataclass
class TrainConfig:
    max_steps: int = field(1000, help="Optimizer steps to train for (each is grad_accum_steps micro-batches).")
    num_workers: int = field(2, help="Ray Train workers (one per GPU when use_gpu).")
    use_gpu: bool = field(False, help="One GPU per worker (NCCL) instead of CPU workers (gloo).")
    cpus_per_worker: float = field(
        1.0, help="CPUs reserved per training worker (fractions allowed; the data pipeline needs the others)."
    )
    zero_stage: int = field(2, help="DeepSpeed ZeRO stage 0-3 (0 = plain data parallel).")
    precision: Precision = field("fp32", help="fp32 | bf16 | fp16 (fp16 needs use_gpu; bf16 works on CPU too).")
    precision_mode: Literal["autocast", "native"] = field(
        "autocast",
        help="How bf16/fp16 is applied: autocast (torch autocast; fp32 parameters, 16-bit matmuls) or native "
        "(DeepSpeed's bf16/fp16 mode: 16-bit parameters and gradients, fp32 master weights and Adam states in "
        "the optimizer partitions; (lon, lat), the location queue and the Fourier frequencies stay fp32). "
        "Ignored with precision fp32.",
    )
    activation_checkpointing: bool = field(
        False,
        help="Recompute the RS and street-view encoder blocks in the backward pass instead of keeping their "
        "activations: less memory (a larger batch fits), about a third more encoder compute.",
    )
    compile: bool = field(
        False,
        help="torch.compile the RS and street-view encoders (in place: state-dict keys unchanged). The first "
        "steps pay the compile time.",
    )
    grad_accum_steps: int = field(1, help="Micro-batches (data.batch_size each) per optimizer step.")
    grad_clip: float = field(1.0, help="Clip the global gradient norm to this (0 = no clipping).")
    log_every: int = field(10, help="Print and log progress every this many optimizer steps.")
    checkpoint_every: int = field(
        100, help="Save a DeepSpeed checkpoint every this many optimizer steps (and at the end)."
    )
    val_every: int = field(
        0,
        help="Validate on data.val_manifest every this many optimizer steps and at the last step, and report "
        "val_loss, val_recall_at_1/5 and val_median_rank with the training metrics (0 = off). With synthetic "
        "training data (empty data.train_manifest) an empty data.val_manifest gets a synthetic validation set.",
    )
    val_batches: int = field(
        0, help="Validation batches per worker per pass (0 = the worker's whole validation shard)."
    )
    max_failures: int = field(3, help="Worker-group failures to recover from (restart from the latest checkpoint).")
    seed: int = field(0, help="Seed of model initialisation (the data seed is data.seed).")

    def validate(self) -> None:
        if self.max_steps < 1 or self.num_workers < 1:
            raise ValueError("max_steps and num_workers must be >= 1")
        if self.cpus_per_worker <= 0:
            raise ValueError("cpus_per_worker must be > 0")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {self.zero_stage}")
        if self.precision == "fp16" and not self.use_gpu:
            raise ValueError("precision fp16 needs use_gpu: true (use fp32 or bf16 on CPU)")
        if self.grad_accum_steps < 1 or self.log_every < 1 or self.checkpoint_every < 1:
            raise ValueError("grad_accum_steps, log_every and checkpoint_every must be >= 1")
        if self.grad_clip < 0 or self.max_failures < 0:
            raise ValueError("grad_clip and max_failures must be >= 0")
        if self.val_every < 0 or self.val_batches < 0:
            raise ValueError("val_every and val_batches must be >= 0")


@dataclass
class RunConfig:
    name: str = field(
        "gair-pretrain", help="Run name: rerunning with the same name resumes from its latest checkpoint."
    )
    storage_path: str = field("./runs", help="Where checkpoints and the export go: local path, s3:// or gs:// URI.")
    keep_checkpoints: int = field(2, help="Checkpoints to keep (the oldest are deleted).")
    synthetic_dir: str = field(
        "./runs/synthetic", help="Where synthetic data is generated when data.train_manifest is empty."
    )
    synthetic_tiles: int = field(64, help="Synthetic training tiles generated when data.train_manifest is empty.")
    synthetic_val_tiles: int = field(
        32,
        help="Synthetic validation tiles (another seed) generated when data.train_manifest and "
        "data.val_manifest are empty and train.val_every > 0.",
    )

    reexport: bool = field(
        False,
        help="Rerunning a run that already finished at train.max_steps does nothing (no training, no new MLflow "
        "run, no new model version); true exports its final checkpoint and registers it again.",
    )
    check_resources: bool = field(
        True,
        help="Before starting, check that the training workers and decode tasks fit the Ray cluster's current "
        "resources and stop with a clear error if not (false on an autoscaling cluster that grows on demand).",
    )

    def validate(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"run.name must be non-empty and contain no '/', got {self.name!r}")
        if self.keep_checkpoints < 1:
            raise ValueError("keep_checkpoints must be >= 1")
        if self.synthetic_tiles < 1 or self.synthetic_val_tiles < 1:
            raise ValueError("synthetic_tiles and synthetic_val_tiles must be >= 1")


@dataclass
class MLflowConfig:
    enabled: bool = field(True, help="Log to MLflow.")
    tracking_uri: str = field(
        "", help="MLflow tracking URI; empty: MLFLOW_TRACKING_URI, else a local sqlite store (./mlflow.db)."
    )
    experiment: str = field("gair-pretrain", help="MLflow experiment name.")
    registered_model: str = field("gair", help="Registered model name (load with models:/NAME@ALIAS).")
    alias: str = field(
        "current",
        help="Alias set on the newly registered model version (MLflow reserves 'latest'; "
        "models:/NAME/latest already means the newest version).",
    )

    def validate(self) -> None:
        if self.enabled and (not self.experiment or not self.registered_model or not self.alias):
            raise ValueError("mlflow.experiment, mlflow.registered_model and mlflow.alias must be non-empty")
        if self.alias.lower() == "latest" or self.alias.lower().startswith("v") and self.alias[1:].isdigit():
            raise ValueError(
                f"mlflow.alias {self.alias!r} is reserved by MLflow (use e.g. 'current'; models:/NAME/latest "
                "already loads the newest version)"
            )


@dataclass
class PretrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig, help="The GAIR model.")
    loss: LossConfig = field(default_factory=LossConfig, help="The pretraining objectives.")
    data: DataConfig = field(default_factory=DataConfig, help="The data plane.")
    optim: OptimConfig = field(default_factory=OptimConfig, help="Optimizer and learning-rate schedule.")
    train: TrainConfig = field(default_factory=TrainConfig, help="Scaling, precision, ZeRO and the loop.")
    run: RunConfig = field(default_factory=RunConfig, help="Run name and storage (checkpoints, export).")
    mlflow: MLflowConfig = field(default_factory=MLflowConfig, help="Experiment tracking.")

    def validate(self) -> None:
        if self.optim.min_lr > self.peak_lr:
            raise ValueError(f"optim.min_lr {self.optim.min_lr} exceeds the peak learning rate {self.peak_lr}")
        unknown = [b for b in self.data.rs_color_jitter_bands if b not in self.model.rs_bands]
        if self.data.rs_color_jitter_p > 0 and unknown:
            raise ValueError(f"data.rs_color_jitter_bands {unknown} are not among model.rs_bands {self.model.rs_bands}")
        if self.loss.distill_weight > 0 and not self.model.sv_teacher:
            raise ValueError(
                "loss.distill_weight > 0 needs model.sv_teacher (the frozen street-view teacher's weights)"
            )
        if self.optim.warmup_steps > self.train.max_steps:
            raise ValueError(
                f"optim.warmup_steps ({self.optim.warmup_steps}) exceeds train.max_steps ({self.train.max_steps})"
            )

    @property
    def global_batch_size(self) -> int:
        return self.data.batch_size * self.train.grad_accum_steps * self.train.num_workers

    @property
    def peak_lr(self) -> float:
        """optim.base_lr x effective batch / 256 when base_lr is set (the reference's rule), else optim.lr."""
        if self.optim.base_lr > 0:
            return self.optim.base_lr * self.global_batch_size / 256
        return self.optim.lr
