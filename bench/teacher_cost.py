"""What the frozen teachers cost per training step: the same step with distillation on and off.

One process, no DeepSpeed (the teachers live outside the engine, so it adds nothing to their
cost): forward + backward + AdamW step of ``GAIRPretrainModule``, timed in interleaved
rounds so both variants see the same machine load. Prints the side-by-side ratio.

    python bench/teacher_cost.py                         # tiny, CPU (rs 32, sv 32, B 8, K 2)
    python bench/teacher_cost.py --size base --rs 96 --sv 224 --batch 32 --obs 1 --device cuda --precision fp16
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from gair.configs.model import LossConfig, ModelConfig  # noqa: E402
from gair.configs.train import OptimConfig  # noqa: E402
from gair.models.gair import GAIR  # noqa: E402
from gair.models.pretrain import GAIRPretrainModule  # noqa: E402
from gair.models.sv_encoder import SVEncoder  # noqa: E402
from gair.models.teachers import Teachers, copy_rs_teacher, freeze  # noqa: E402
from gair.train.optim import build_optimizer  # noqa: E402


def build(cfg: ModelConfig, distill: float, device: str) -> tuple[GAIRPretrainModule, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = GAIR(cfg)
    teachers = None
    if distill:
        sv = SVEncoder(cfg.sv_image_size, cfg.sv_patch_size, cfg.width, cfg.depth, cfg.sv_heads)
        teachers = Teachers(copy_rs_teacher(model.rs_encoder), freeze(sv))
    module = GAIRPretrainModule(
        cfg, LossConfig(queue_size=4096, distill_weight=distill), model=model, teachers=teachers
    )
    module = module.to(device).train()
    return module, build_optimizer(module, OptimConfig(lr=1e-4))


def batch(cfg: ModelConfig, B: int, K: int, device: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    out = {
        "rs": torch.rand(B, len(cfg.rs_bands), cfg.rs_image_size, cfg.rs_image_size, generator=g),
        "sv": torch.randn(B, K, 3, cfg.sv_image_size, cfg.sv_image_size, generator=g),
        "sv_mask": torch.ones(B, K, dtype=torch.bool),
        "lonlat": torch.rand(B, K, 2, generator=g) * 40,
        "xy": torch.rand(B, K, 2, generator=g) * 2 - 1,
    }
    return {k: v.to(device) for k, v in out.items()}


def step(module, opt, x, dtype) -> None:
    with torch.autocast(x["rs"].device.type, dtype=dtype, enabled=dtype != torch.float32):
        loss, _ = module(x)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="tiny", help="model size preset: tiny, small, base or large")
    p.add_argument("--rs", type=int, default=32, help="RS input side in pixels (a multiple of the patch size, 8)")
    p.add_argument(
        "--sv", type=int, default=32, help="street-view input side in pixels (a multiple of the patch size, 16)"
    )
    p.add_argument("--batch", type=int, default=8, help="RS tiles per step (B)")
    p.add_argument("--obs", type=int, default=2, help="street views per tile (K)")
    p.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="timed rounds, the variants taking turns in each, after one warm-up step (median reported)",
    )
    p.add_argument("--steps", type=int, default=3, help="steps per round and variant")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda or cuda:N")
    p.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16", "fp16"],
        help="torch.autocast dtype of the forward pass (fp32: no autocast)",
    )
    a = p.parse_args()
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[a.precision]
    cfg = ModelConfig(size=a.size, rs_image_size=a.rs, sv_image_size=a.sv, rs_final_norm=True)
    x = batch(cfg, a.batch, a.obs, a.device)
    variants = {"teachers off": build(cfg, 0.0, a.device), "teachers on": build(cfg, 0.2, a.device)}
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    for module, opt in variants.values():  # warm-up
        step(module, opt, x, dtype)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(a.rounds):
        for name, (module, opt) in variants.items():
            sync()
            t0 = time.perf_counter()
            for _ in range(a.steps):
                step(module, opt, x, dtype)
            sync()
            times[name].append((time.perf_counter() - t0) / a.steps)
    off, on = statistics.median(times["teachers off"]), statistics.median(times["teachers on"])
    print(f"model {a.size}, RS {a.rs}px, SV {a.sv}px, B={a.batch} tiles x K={a.obs} views, {a.device}, {a.precision}")
    print(f"step time (median of {a.rounds} rounds x {a.steps} steps): off {off * 1e3:.1f} ms | on {on * 1e3:.1f} ms")
    print(f"teachers on / off: {on / off:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
