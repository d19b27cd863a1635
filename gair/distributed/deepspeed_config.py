"""The DeepSpeed JSON config for a :class:`~gair.configs.train.PretrainConfig`.

The optimizer and LR schedule are *not* in this dict: the loop passes its own AdamW
(with the no-decay parameter groups) and LambdaLR to ``deepspeed.initialize``, so the
same code path serves ZeRO 0-3, and the schedule's state is saved in DeepSpeed checkpoints.
"""

from __future__ import annotations

from typing import Any

from gair.configs.train import PretrainConfig

# DeepSpeed prints its own progress every N steps; ours is in gair.train.loop.
_NEVER = 1 << 30
_AUTOCAST_DTYPE = {"fp32": "fp32", "bf16": "bf16", "fp16": "fp16"}


def build_deepspeed_config(cfg: PretrainConfig) -> dict[str, Any]:
    """DeepSpeed config: micro-batch, accumulation, clipping, ZeRO stage and precision."""
    t = cfg.train
    zero: dict[str, Any] = {"stage": t.zero_stage}
    if t.zero_stage >= 1:
        zero.update(overlap_comm=t.use_gpu, contiguous_gradients=True, reduce_scatter=True)
    if t.zero_stage == 3:
        # Export gathers the full fp32 weights from the checkpoint (zero_to_fp32), so the
        # engine need not gather 16-bit weights on save.
        zero.update(stage3_gather_16bit_weights_on_model_save=False)
    return {
        "train_micro_batch_size_per_gpu": cfg.data.batch_size,
        "gradient_accumulation_steps": t.grad_accum_steps,
        "train_batch_size": cfg.global_batch_size,
        "gradient_clipping": t.grad_clip,
        "zero_optimization": zero,
        # Mixed precision as torch autocast (fp32 master parameters, bf16/fp16 matmuls):
        # the batch keeps (lon, lat) and query points in fp32, which a bf16 module cast
        # would round to ~100 m; ZeRO still reduces gradients of Linear/Conv in 16 bits.
        "torch_autocast": {"enabled": t.precision != "fp32", "dtype": _AUTOCAST_DTYPE[t.precision]},
        # Our AdamW is a client optimizer; it is safe under ZeRO (plain torch AdamW).
        "zero_allow_untested_optimizer": True,
        "steps_per_print": _NEVER,
        "wall_clock_breakdown": False,
        "checkpoint": {"use_node_local_storage": True},
    }
