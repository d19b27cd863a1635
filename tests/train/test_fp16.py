"""fp16 with loss scaling through DeepSpeed, teachers on: on a GPU (ZeRO 0, 2, 3), else on CPU (ZeRO 2)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

pytestmark = pytest.mark.slow
CUDA = torch.cuda.is_available()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, stage: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    import deepspeed

    from gair.configs import load_config
    from gair.configs.train import PretrainConfig
    from gair.distributed import build_deepspeed_config
    from gair.train.engine import skip_inference_shm_op
    from gair.train.optim import build_optimizer
    from tests.models.test_teachers import _batch, _module

    skip_inference_shm_op(deepspeed)  # as the job does: no JIT build of an inference-only op
    deepspeed.init_distributed(dist_backend="nccl" if CUDA else "gloo", auto_mpi_discovery=False)
    dev = "cuda" if CUDA else "cpu"
    sets = [f"train.zero_stage={stage}", "train.num_workers=1", "data.batch_size=2", "train.use_gpu=true"]
    cfg = load_config(PretrainConfig, None, [*sets, "train.precision=fp16", "train.grad_clip=0"])
    module = _module().to(dev)  # fp16 configs validate only with use_gpu; on CPU the same DeepSpeed path runs
    engine, *_ = deepspeed.initialize(
        model=module, optimizer=build_optimizer(module, cfg.optim), config=build_deepspeed_config(cfg)
    )
    scaler = getattr(engine.optimizer, "torch_autocast_gradscaler", None) or engine.torch_autocast_z0_gradscaler
    out["scaler"] = scaler is not None
    out["scale"] = float(scaler.get_scale()) if scaler is not None else 0.0
    losses, dtypes = [], set()
    hook = module.teachers.sv.pooler.register_forward_hook(lambda m, i, o: dtypes.add(o.dtype))
    for _ in range(4):
        batch = {k: v.to(dev) for k, v in _batch().items()}
        loss, metrics = engine(batch)
        engine.backward(loss)
        engine.step()
        losses.append(float(loss.detach()))
    hook.remove()
    out["losses"] = losses
    out["teacher_dtypes"] = sorted(str(d) for d in dtypes)
    out["teacher_params_fp32"] = all(p.dtype == torch.float32 for p in module.teachers.parameters())


@pytest.mark.parametrize("stage", [0, 2, 3] if CUDA else [2])
def test_fp16_uses_deepspeed_loss_scaler_and_teachers_run_in_fp16(stage):
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(_free_port(), stage, out), nprocs=1, join=True)
    assert out["scaler"] and out["scale"] > 1  # a dynamic loss scale (GradScaler starts at 2**16)
    assert all(torch.isfinite(torch.tensor(out["losses"])))
    assert out["teacher_dtypes"] == ["torch.float16"] and out["teacher_params_fp32"]
