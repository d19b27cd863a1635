"""DeepSpeed ZeRO-3 glue: build the model partitioned, and one stage-3 memory fix.

Imports DeepSpeed lazily (inside the functions): workers call these, the driver does not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

_PATCHED = "_gair_fp32_alias_patch"


def partitioned_construction(ds_config: dict[str, Any], enabled: bool) -> contextlib.AbstractContextManager:
    """``deepspeed.zero.Init`` (when enabled): every parameter is partitioned as its module is built.

    Only the config is passed, never ``dtype``: DeepSpeed 0.19 reads an explicit dtype as
    ``dtype or fp16 if fp16_supported else bf16 ...`` (operator precedence), so on CPU any
    explicit dtype, fp32 included, turns the parameters into bf16. From the config alone it
    picks bf16/fp16 only when DeepSpeed's native mixed precision is on, fp32 otherwise.

    Inside, timm's ``VisionTransformer.init_weights`` is deferred (see
    :func:`rerun_deferred_inits`, to call right after construction).
    """
    if not enabled:
        return contextlib.nullcontext()
    import deepspeed

    stack = contextlib.ExitStack()
    stack.enter_context(_deferred_vit_init())
    stack.enter_context(deepspeed.zero.Init(config_dict_or_path=ds_config))
    return stack


def _rng_state() -> tuple[torch.Tensor, torch.Tensor | None]:
    cuda = torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


@contextlib.contextmanager
def _deferred_vit_init() -> Iterator[None]:
    """timm's ViT initialises its children's weights at the end of its ``__init__``; under
    ``zero.Init`` they are already partitioned (0 elements) and it would change nothing.
    Record the random state instead, for :func:`rerun_deferred_inits`."""
    from timm.models.vision_transformer import VisionTransformer

    original = VisionTransformer.init_weights

    def deferred(self, mode: str = "", needs_reset: bool = True) -> None:
        self._gair_deferred_init = (_rng_state(), mode, needs_reset)

    VisionTransformer.init_weights = deferred
    try:
        yield
    finally:
        VisionTransformer.init_weights = original


def rerun_deferred_inits(module: torch.nn.Module) -> None:
    """Run the initialisations deferred by :func:`partitioned_construction` on gathered parameters.

    Rank 0 initialises, DeepSpeed scatters the result. The random state is the one recorded
    when the initialisation was due, so on CPU the weights equal those of an unpartitioned
    build with the same seed (the street-view encoder is built last, so nothing built after
    it drew from the random state in between).
    """
    import deepspeed

    for sub in module.modules():
        deferred = sub.__dict__.pop("_gair_deferred_init", None)
        if deferred is None:
            continue
        (cpu, cuda), mode, needs_reset = deferred
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda)
        with deepspeed.zero.GatheredParameters(list(sub.parameters()), modifier_rank=0):
            type(sub).init_weights(sub, mode, needs_reset=needs_reset)


def patch_stage3_fp32_alias() -> None:
    """Stop ZeRO-3 from keeping a second fp32 copy of its partition when the parameters are fp32.

    ``DeepSpeedZeroOptimizer_Stage3._create_fp32_partitions`` reuses the parameter partition
    as the fp32 master partition only if ``partition.device == self.device``; ``self.device``
    is the accelerator's device *name*, a str ("cpu", "cuda:0"), and ``torch.device("cpu") ==
    "cpu"`` is False, so in fp32 (and autocast) training it always clones: one more fp32
    partition per worker (+25% of stage 3's model state). The patch wraps that method to see
    ``self.device`` as a ``torch.device`` while it runs (restored after); nothing else in
    DeepSpeed changes. Offloaded optimizers (``self.device`` an offload enum) are left alone.
    Idempotent.
    """
    from deepspeed.runtime.zero.stage3 import DeepSpeedZeroOptimizer_Stage3 as Stage3

    if getattr(Stage3, _PATCHED, False):
        return
    original = Stage3._create_fp32_partitions

    def _create_fp32_partitions(self) -> None:
        device = self.device
        if not self.offload_optimizer and type(device) is str:
            self.device = torch.device(device)
        try:
            original(self)
        finally:
            self.device = device

    Stage3._create_fp32_partitions = _create_fp32_partitions
    setattr(Stage3, _PATCHED, True)


def fp32_partition_is_aliased(engine: Any) -> bool | None:
    """Whether a stage-3 engine's fp32 master partitions share memory with its parameter
    partitions (None when not stage 3): True once :func:`patch_stage3_fp32_alias` works."""
    opt = getattr(engine, "optimizer", None)
    groups = getattr(opt, "fp32_partitioned_groups_flat", None)
    if groups is None or not hasattr(opt, "fp16_partitioned_groups_flat"):
        return None
    return all(a.data_ptr() == b.data_ptr() for a, b in zip(groups, opt.fp16_partitioned_groups_flat) if a.numel())
