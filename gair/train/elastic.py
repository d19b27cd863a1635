"""Resume a DeepSpeed checkpoint with another worker count (ZeRO 1-3, CPU or GPU).

DeepSpeed's own ``load_checkpoint`` needs the worker count the ZeRO shards were written
with. Here the shards of *all* old workers (every checkpoint directory holds them: Ray
Train merges the workers' files) are consolidated per parameter -- fp32 master weight and
Adam's ``exp_avg`` / ``exp_avg_sq`` -- with DeepSpeed's own ``zero_to_fp32`` merge (the
optimizer states have the layout of the fp32 partitions, so the same merge applies), then
written into the new engine's partitions through DeepSpeed's per-parameter API. Module
buffers (the location queue), the LR schedule and the step counters come from the
world-independent model-state file; the data position is rescaled (:func:`rescale_position`).
Every worker consolidates from its own copy of the checkpoint: workers need not share a
file system. Memory: one full fp32 copy of the model and of each Adam moment, on the host.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

OPTIM_KEYS = ("exp_avg", "exp_avg_sq")


def rescale_position(state: Any, world_size: int) -> Any:
    """The same samples-consumed position with ``world_size`` workers (rounded down).

    ``batches_in_epoch`` counts per-worker micro-batches; with W workers the epoch has used
    ``batches_in_epoch * W`` worker batches, i.e. ``batches_in_epoch * W / W'`` per worker now.
    Ray Data deals the shard out anew for the new worker count, so this is the position in
    samples, not the exact same rows.
    """
    old = state.world_size or world_size
    if old == world_size:
        return dataclasses.replace(state, world_size=world_size)
    return dataclasses.replace(
        state, batches_in_epoch=state.batches_in_epoch * old // world_size, world_size=world_size
    )


def load_resharded(engine: Any, checkpoint_dir: str | Path) -> None:
    """Load a DeepSpeed checkpoint tag folder written by any number of workers into ``engine``."""
    import deepspeed.comm as dist

    if engine.zero_optimization_stage() == 0:
        raise ValueError("stage-0 checkpoints do not depend on the worker count: use engine.load_checkpoint")
    tag_dir = Path(checkpoint_dir)
    model_state = torch.load(_model_state_file(tag_dir), map_location="cpu", weights_only=False)
    full = consolidate(tag_dir)
    names = dict(engine.module.named_parameters())
    missing = [n for n, p in names.items() if p.requires_grad and n not in full["fp32"]]
    if missing:
        raise RuntimeError(f"checkpoint {tag_dir} lacks parameters {missing[:5]}: another model config?")

    _set_weights(engine, names, full["fp32"])
    _ensure_optimizer_states(engine, full.get("step", 0))
    link = getattr(engine.optimizer, "_lazy_init_hp_params_optimizer_state", None)
    if link is not None:  # ZeRO 1-2: point each parameter's fragment at the states just made
        link()
    for key in OPTIM_KEYS:
        if key in full:
            _set_optimizer_state(engine, names, full[key], key)

    buffers = model_state["module"]
    for name, buf in engine.module.named_buffers():
        if name in buffers:
            buf.copy_(buffers[name].to(buf.device, buf.dtype))
    if engine.lr_scheduler is not None and model_state.get("lr_scheduler") is not None:
        engine.lr_scheduler.load_state_dict(model_state["lr_scheduler"])
        # A scheduler's state holds its last LR but does not put it into the optimizer (the
        # optimizer's own state dict, which the worker-count-bound shards carry, would).
        groups = engine.lr_scheduler.optimizer.param_groups
        for group, lr in zip(groups, engine.lr_scheduler.get_last_lr(), strict=True):
            group["lr"] = lr
    engine.global_steps = model_state.get("global_steps", engine.global_steps)
    engine.global_samples = model_state.get("global_samples", engine.global_samples)
    engine.skipped_steps = model_state.get("skipped_steps", engine.skipped_steps)
    dist.barrier()


def _model_state_file(tag_dir: Path) -> Path:
    files = sorted(tag_dir.glob("*mp_rank_00_model_states.pt"))
    if not files:
        raise FileNotFoundError(f"no DeepSpeed model-state file in {tag_dir}")
    return files[0]


def consolidate(tag_dir: str | Path) -> dict[str, Any]:
    """{"fp32" | "exp_avg" | "exp_avg_sq": {parameter name: full tensor}, "step": int} from ZeRO 1-3 shards."""
    from deepspeed.checkpoint.constants import (
        BASE_OPTIMIZER_STATE,
        FP32_FLAT_GROUPS,
        OPTIMIZER_STATE_DICT,
        PARAM_ALIGNMENT_PADDINGS,
        PARTITION_COUNT,
        SINGLE_PARTITION_OF_FP32_GROUPS,
        ZERO_STAGE,
    )
    from deepspeed.utils import zero_to_fp32 as z

    tag_dir = str(tag_dir)
    zero_model_states = z.parse_model_states(z.get_model_state_files(tag_dir))
    shards = [
        torch.load(f, map_location="cpu", weights_only=False)[OPTIMIZER_STATE_DICT] for f in z.get_optim_files(tag_dir)
    ]
    stage = shards[0][ZERO_STAGE]
    world = shards[0][PARTITION_COUNT]
    world = max(world) if isinstance(world, list) else world
    if world != len(shards):
        raise RuntimeError(f"{tag_dir}: {len(shards)} optimizer shards for a world of {world}")
    key = SINGLE_PARTITION_OF_FP32_GROUPS if stage <= 2 else FP32_FLAT_GROUPS
    paddings = shards[0].get(PARAM_ALIGNMENT_PADDINGS)
    groups = {"fp32": [s[key] for s in shards]}
    # Our AdamW's state, one entry per flat partition: a torch state dict (stage 3, and stages
    # 1-2 by default), or a list per group (stages 1-2 with ``elastic_checkpoint``).
    inner = []
    for s in shards:
        base = s[BASE_OPTIMIZER_STATE] if stage <= 2 else s[OPTIMIZER_STATE_DICT]
        inner.append(dict(enumerate(base)) if isinstance(base, list) else base["state"])
    for name in OPTIM_KEYS:
        if all(len(st) == len(g) and all(name in st[i] for i in range(len(g))) for st, g in zip(inner, groups["fp32"])):
            # Stages 1-2 save the fp32 partitions without their alignment padding, the states with it.
            groups[name] = [
                [st[i][name].float().flatten()[: g[i].numel()] for i in range(len(g))]
                for st, g in zip(inner, groups["fp32"])
            ]
    step = next((int(st[0]["step"]) for st in inner if st and "step" in st[0]), 0)
    out: dict[str, Any] = {"step": step}
    for name, flat in groups.items():
        if stage <= 2:
            sd = z._get_fp32_state_dict_from_zero2_checkpoint(world, flat, zero_model_states, False, paddings)
        else:
            sd = z._get_fp32_state_dict_from_zero3_checkpoint(world, flat, zero_model_states, False)
        out[name] = z.to_torch_tensor(sd)
    return out


def _set_weights(engine: Any, params: dict[str, torch.nn.Parameter], values: dict[str, torch.Tensor]) -> None:
    import deepspeed
    from deepspeed.utils import safe_set_full_fp32_param

    stage = engine.zero_optimization_stage()
    for name, p in params.items():
        value = values[name]
        if stage == 3:
            with deepspeed.zero.GatheredParameters([p], modifier_rank=0):
                if engine.global_rank == 0:
                    p.data.copy_(value.reshape(p.ds_shape).to(p.device, p.dtype))
            if p.requires_grad:
                _set_z3_partition(engine, p, value, None)
        else:
            p.data.copy_(value.reshape(p.shape).to(p.device, p.dtype))
            if p.requires_grad:
                safe_set_full_fp32_param(p, value.to(p.device))


def _ensure_optimizer_states(engine: Any, step: int) -> None:
    """Create AdamW's states (torch makes them at the first step) with the saved step count.

    ZeRO 1-2 give the inner optimizer one flat fp32 partition per parameter group; ZeRO-3
    steps sub-groups of them (``fp32_partitioned_groups_flat``, swapped into the group
    one at a time), so its states are keyed by every sub-group's flat partition.
    """
    zero = engine.optimizer
    inner = getattr(zero, "optimizer", zero)
    if engine.zero_optimization_stage() == 3:
        flats = [
            (zero.fp32_partitioned_groups_flat[i], inner.param_groups[g]) for i, g in zero.sub_group_to_group_id.items()
        ]
    else:
        flats = [(q, group) for group in inner.param_groups for q in group["params"]]
    for q, group in flats:
        on_device = group.get("fused") or group.get("capturable")
        st = inner.state[q]
        st.setdefault("exp_avg", torch.zeros_like(q, memory_format=torch.preserve_format))
        st.setdefault("exp_avg_sq", torch.zeros_like(q, memory_format=torch.preserve_format))
        st["step"] = torch.tensor(float(step), dtype=torch.float32, device=q.device if on_device else "cpu")


def _set_optimizer_state(engine: Any, params: dict[str, torch.nn.Parameter], values: dict, key: str) -> None:
    from deepspeed.utils import safe_set_full_optimizer_state

    stage = engine.zero_optimization_stage()
    for name, p in params.items():
        if not p.requires_grad:
            continue
        if stage == 3:
            _set_z3_partition(engine, p, values[name], key)
        else:
            safe_set_full_optimizer_state(p, values[name].to(p.device), key)


def _set_z3_partition(engine: Any, p: torch.nn.Parameter, value: torch.Tensor, key: str | None) -> None:
    """This rank's slice of ``value`` into the ZeRO-3 fp32 partition (or its ``key`` state).

    DeepSpeed's ``set_full_hp_param`` slices ``value`` without the padding of the last
    rank's partition (it fails when the size is not a multiple of the world); this pads.
    """
    opt = engine.optimizer
    part, _ = opt._get_fp32_opt_state_partition(p, release_swap_buffers=False, optim_state_key=key)
    n = part.numel()
    start = n * opt._get_param_partition_rank(p)
    chunk = value.flatten()[start : start + n]
    part.data.zero_()
    part.data[: chunk.numel()].copy_(chunk.to(part.device, part.dtype))
