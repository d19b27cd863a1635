"""Under DeepSpeed ZeRO 3 the teachers are neither partitioned, stepped nor checkpointed."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, ckpt_dir: str, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    import deepspeed

    from gair.configs import load_config
    from gair.configs.train import PretrainConfig
    from gair.distributed import build_deepspeed_config
    from gair.train.optim import build_optimizer
    from tests.models.test_teachers import _batch, _module

    torch.set_num_threads(1)
    from gair.train.engine import skip_inference_shm_op

    skip_inference_shm_op(deepspeed)  # as the job does: no JIT build of an inference-only op
    deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
    cfg = load_config(PretrainConfig, None, ["train.zero_stage=3", "train.num_workers=1", "data.batch_size=2"])
    module = _module()
    teacher_before = {k: v.clone() for k, v in module.teachers.state_dict().items()}
    engine, *_ = deepspeed.initialize(
        model=module, optimizer=build_optimizer(module, cfg.optim), config=build_deepspeed_config(cfg)
    )
    student_params = list(engine.module.parameters())
    out["student_partitioned"] = all(hasattr(p, "ds_id") for p in student_params)
    out["teacher_partitioned"] = any(hasattr(p, "ds_id") for p in module.teachers.parameters())
    out["teacher_full_size"] = all(p.numel() > 0 for p in module.teachers.parameters())
    losses = []
    for _ in range(3):
        loss, metrics = engine(_batch())
        engine.backward(loss)
        engine.step()
        losses.append(float(loss.detach()))
    out["teacher_unchanged"] = all(torch.equal(v, teacher_before[k]) for k, v in module.teachers.state_dict().items())
    out["distill_rs"] = float(metrics["distill_rs"])
    engine.save_checkpoint(ckpt_dir, tag="t")
    state = torch.load(os.path.join(ckpt_dir, "t", "zero_pp_rank_0_mp_rank_00_model_states.pt"), weights_only=False)
    names = list(state["module"]) + [n for group in state.get("param_shapes", []) for n in group]
    out["teacher_in_checkpoint"] = any("teacher" in n for n in names)
    out["losses"] = losses


def test_teachers_stay_out_of_zero3(tmp_path):
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(_free_port(), str(tmp_path), out), nprocs=1, join=True)
    assert out["student_partitioned"] and not out["teacher_partitioned"] and out["teacher_full_size"]
    assert out["teacher_unchanged"] and not out["teacher_in_checkpoint"]
    assert -0.2 <= out["distill_rs"] < -0.15  # the RS student stays close to its teacher after 2 steps
    assert all(torch.isfinite(torch.tensor(out["losses"])))
