"""The DeepSpeed engine of a training run: ``GAIRPretrainModule`` + AdamW + LR schedule.

Kept apart from ``gair.train.loop`` (the Ray Train worker function) so that it imports no
Ray: ``bench/gpu_step.py`` builds exactly the job's engine on a GPU machine without Ray.
DeepSpeed is imported inside the function (it probes the accelerator on import).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from gair.configs.train import PretrainConfig
from gair.distributed import build_deepspeed_config
from gair.train.init import build_pretrain_module
from gair.train.optim import build_lr_schedule, build_optimizer


def create_engine(cfg: PretrainConfig, device: torch.device, log: Callable[[str], None] = print) -> Any:
    """``GAIRPretrainModule`` wrapped by DeepSpeed with our AdamW (fused on GPU) and LR schedule.

    Needs an initialised process group (Ray Train's, or ``deepspeed.init_distributed``).
    Stage 3 builds the module under ``deepspeed.zero.Init`` (each parameter partitioned as
    it is created: no worker ever holds the whole model), except in native 16-bit mode,
    which would round the fp32 buffers (queue, Fourier frequencies) as they are created,
    with a distillation teacher (a copy of the RS encoder) or a CROMA start (``model.rs_init``
    loads into whole parameters).
    """
    import deepspeed

    skip_inference_shm_op(deepspeed)
    from gair.distributed.zero import partitioned_construction, patch_stage3_fp32_alias, rerun_deferred_inits

    t = cfg.train
    ds_config = build_deepspeed_config(cfg)
    if t.zero_stage == 3:
        patch_stage3_fp32_alias()
    native = t.precision != "fp32" and t.precision_mode == "native"
    zero_init = t.zero_stage == 3 and not native and cfg.loss.distill_weight == 0 and not cfg.model.rs_init
    torch.manual_seed(t.seed)  # same initial weights on every rank
    with partitioned_construction(ds_config, enabled=zero_init):
        module = build_pretrain_module(cfg, log=log)
    if zero_init:
        rerun_deferred_inits(module)
    else:
        module = module.to(device)
    module.model.set_grad_checkpointing(t.activation_checkpointing)
    if t.compile:
        module.model.compile_encoders()
    optimizer = build_optimizer(module, cfg.optim, fused=device.type == "cuda", peak_lr=cfg.peak_lr)
    schedule = build_lr_schedule(optimizer, cfg.optim, t.max_steps, peak_lr=cfg.peak_lr)
    engine, _, _, _ = deepspeed.initialize(model=module, optimizer=optimizer, lr_scheduler=schedule, config=ds_config)
    return engine


SHM_COMM_OP = "deepspeed_shm_comm"


def skip_inference_shm_op(deepspeed: Any) -> None:
    """Keep DeepSpeed from JIT-compiling its shared-memory all-reduce op when it sets up its comm backend.

    DeepSpeed's torch backend builds that C++ op (``deepspeed_shm_comm``, with gcc) whenever it is
    created on a CPU accelerator, for ``inference_all_reduce`` alone, which training never calls
    (its all-reduces go to ``torch.distributed``). The build took 63-95 s on a 2-core machine, on
    the first run after every new install, with the other workers waiting on its lock. Marked
    incompatible, the op is not built and the backend uses ``torch.distributed`` throughout.
    """
    deepspeed.ops.__compatible_ops__[SHM_COMM_OP] = False
