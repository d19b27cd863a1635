"""The DeepSpeed JSON config for a :class:`~gair.configs.train.PretrainConfig`.

The optimizer and LR schedule are *not* in this dict: the loop passes its own AdamW
(with the no-decay parameter groups) and LambdaLR to ``deepspeed.initialize``, so the
same code path serves ZeRO 0-3, and the schedule's state is saved in DeepSpeed checkpoints.

ZeRO's buffer sizes are derived from the model (:func:`zero_buffer_sizes`): DeepSpeed's
defaults (5e8-element buckets, 1e9 live parameters) exceed the whole base model, so a
stage-3 worker would hold a full-model gradient bucket and keep every gathered parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gair.configs.model import ModelConfig
from gair.configs.train import PretrainConfig

# DeepSpeed prints its own progress every N steps; ours is in gair.train.loop.
_NEVER = 1 << 30
_AUTOCAST_DTYPE = {"fp32": "fp32", "bf16": "bf16", "fp16": "fp16"}


@dataclass(frozen=True)
class ParamStats:
    total: int  # trainable parameter elements
    largest: int  # elements of the largest single parameter tensor


_STATS: dict[str, ParamStats] = {}


def param_stats(model_cfg: ModelConfig) -> ParamStats:
    """Parameter counts of the GAIR model a config describes (built on the meta device, cached)."""
    key = repr(model_cfg)
    if key not in _STATS:
        _STATS[key] = _count_params(model_cfg)
    return _STATS[key]


def _count_params(model_cfg: ModelConfig) -> ParamStats:
    import torch

    from gair.models.gair import GAIR

    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = GAIR(model_cfg)
    sizes = [p.numel() for p in model.parameters() if p.requires_grad]
    return ParamStats(total=sum(sizes), largest=max(sizes))


def zero_buffer_sizes(stats: ParamStats, stage: int) -> dict[str, int]:
    """ZeRO bucket and prefetch sizes (elements) from the model size.

    - ``reduce_bucket_size`` (stages 1-3): gradients are reduced bucket by bucket; a
      bucket of 1/16 of the model keeps a few large messages per step (efficient on
      NCCL) while the contiguous bucket buffer stays small next to a worker's partition.
    - stage 3: ``stage3_prefetch_bucket_size`` as the bucket; ``stage3_max_live_parameters``
      and ``stage3_max_reuse_distance`` 1/8 of the model, so gathered parameters are
      released soon instead of kept for reuse; ``sub_group_size`` 1/4 of the model, so the
      optimizer steps its partition in a few pieces (smaller temporaries).
    Every size is at least the largest parameter (one tensor must fit a bucket).
    """
    n, big = stats.total, stats.largest
    sizes = {"reduce_bucket_size": max(big, n // 16)}
    if stage == 3:
        sizes.update(
            stage3_prefetch_bucket_size=max(big, n // 16),
            stage3_max_live_parameters=max(big, n // 8),
            stage3_max_reuse_distance=max(big, n // 8),
            sub_group_size=max(big, n // 4),
        )
    return sizes


def build_deepspeed_config(cfg: PretrainConfig) -> dict[str, Any]:
    """DeepSpeed config: micro-batch, accumulation, clipping, ZeRO stage and precision."""
    t = cfg.train
    zero: dict[str, Any] = {"stage": t.zero_stage}
    if t.zero_stage >= 1:
        zero.update(overlap_comm=t.use_gpu, contiguous_gradients=True, reduce_scatter=True)
        zero.update(zero_buffer_sizes(param_stats(cfg.model), t.zero_stage))
    if t.zero_stage == 3:
        # Export gathers the full fp32 weights from the checkpoint (zero_to_fp32), so the
        # engine need not gather 16-bit weights on save.
        zero.update(stage3_gather_16bit_weights_on_model_save=False)
    native = t.precision != "fp32" and t.precision_mode == "native"
    ds: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": cfg.data.batch_size,
        "gradient_accumulation_steps": t.grad_accum_steps,
        "train_batch_size": cfg.global_batch_size,
        "gradient_clipping": t.grad_clip,
        "zero_optimization": zero,
        # autocast: torch autocast (fp32 master parameters, bf16/fp16 matmuls); the batch
        # keeps (lon, lat) and query points in fp32, which a 16-bit cast would round to
        # ~100 m; ZeRO still reduces gradients of Linear/Conv in 16 bits.
        "torch_autocast": {"enabled": t.precision != "fp32" and not native, "dtype": _AUTOCAST_DTYPE[t.precision]},
        # Our AdamW is a client optimizer; it is safe under ZeRO (plain torch AdamW).
        "zero_allow_untested_optimizer": True,
        "steps_per_print": _NEVER,
        "wall_clock_breakdown": False,
        "checkpoint": {"use_node_local_storage": True},
    }
    if native:
        # DeepSpeed's own mixed precision: 16-bit parameters and gradients (half the
        # all-gather/reduce volume), fp32 master weights and Adam states in the optimizer
        # partitions. DeepSpeed casts parameters only; fp32 buffers stay fp32.
        if t.precision == "bf16":
            ds["bf16"] = {"enabled": True}
        else:
            ds["fp16"] = {"enabled": True, "initial_scale_power": 16}
    return ds
