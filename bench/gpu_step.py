"""Samples/s and model FLOPs utilization of one GAIR pretraining step under DeepSpeed.

Standalone, one process, no Ray: the module and DeepSpeed config are the ones the job
uses (``gair.models.pretrain``, ``gair.distributed.build_deepspeed_config``), on random
batches in the contract layout, so the number is the model step alone (no data plane).
FLOPs are counted with ``torch.utils.flop_counter`` on one forward+backward.

    python bench/gpu_step.py                          # base, bf16, ZeRO-2, batch 64, on the GPU
    python bench/gpu_step.py --size tiny --device cpu --precision fp32 --steps 3 --batch-size 4
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from gair.configs import load_config  # noqa: E402
from gair.configs.train import PretrainConfig  # noqa: E402

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="base", choices=["tiny", "small", "base", "large"])
    p.add_argument("--batch-size", type=int, default=64, help="tiles per step")
    p.add_argument("--obs-per-tile", type=int, default=4)
    p.add_argument("--extra-points", type=int, default=16)
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--zero-stage", type=int, default=2)
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    p.add_argument("--peak-tflops", type=float, default=0.0, help="device peak (dense); 0: from the GPU name")
    return p.parse_args(argv)


def bench_config(args: argparse.Namespace, use_gpu: bool) -> PretrainConfig:
    small_images = args.size == "tiny"
    sets = [
        f"model.size={args.size}",
        f"data.batch_size={args.batch_size}",
        f"data.obs_per_tile={args.obs_per_tile}",
        f"data.extra_points={args.extra_points}",
        f"train.precision={args.precision}",
        f"train.zero_stage={args.zero_stage}",
        f"train.use_gpu={str(use_gpu).lower()}",
        "train.num_workers=1",
        "optim.warmup_steps=0",
    ]
    if small_images:
        sets += ["model.rs_image_size=32", "model.sv_image_size=32"]
    return load_config(PretrainConfig, None, sets)


def random_batch(cfg: PretrainConfig, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch in the layout of docs/contracts.md (all observations real)."""
    g = torch.Generator().manual_seed(seed)
    B, K, M = cfg.data.batch_size, cfg.data.obs_per_tile, cfg.data.extra_points
    C, S, V = len(cfg.model.rs_bands), cfg.model.rs_image_size, cfg.model.sv_image_size
    lonlat = torch.stack(
        [torch.rand(B, K + M, generator=g) * 360 - 180, torch.rand(B, K + M, generator=g) * 160 - 80], -1
    )
    batch = {
        "rs": torch.randn(B, C, S, S, generator=g),
        "sv": torch.randn(B, K, 3, V, V, generator=g),
        "sv_mask": torch.ones(B, K, dtype=torch.bool),
        "lonlat": lonlat[:, :K].contiguous(),
        "xy": torch.rand(B, K, 2, generator=g) * 2 - 1,
        "xy_extra": torch.rand(B, M, 2, generator=g) * 2 - 1,
        "lonlat_extra": lonlat[:, K:].contiguous(),
    }
    return {k: v.to(device) for k, v in batch.items()}


def init_single_process(backend: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    import deepspeed

    deepspeed.init_distributed(dist_backend=backend)


def build_engine(cfg: PretrainConfig, device: torch.device):
    import deepspeed

    from gair.distributed import build_deepspeed_config
    from gair.models.pretrain import GAIRPretrainModule
    from gair.train.optim import build_lr_schedule, build_optimizer

    torch.manual_seed(0)
    module = GAIRPretrainModule(cfg.model, cfg.loss).to(device)
    optimizer = build_optimizer(module, cfg.optim, fused=device.type == "cuda")
    schedule = build_lr_schedule(optimizer, cfg.optim, cfg.train.max_steps)
    engine, _, _, _ = deepspeed.initialize(
        model=module, optimizer=optimizer, lr_scheduler=schedule, config=build_deepspeed_config(cfg)
    )
    n_params = sum(p.numel() for p in module.parameters())
    return engine, n_params


def step(engine, batch) -> torch.Tensor:
    loss, _ = engine(batch)
    engine.backward(loss)
    engine.step()
    return loss


def count_flops(engine, batch) -> int:
    """Forward + backward FLOPs of one step (matmuls, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        loss, _ = engine(batch)
        engine.backward(loss)
    engine.step()
    return counter.get_total_flops()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_tflops(args: argparse.Namespace, device: torch.device) -> float:
    if args.peak_tflops:
        return args.peak_tflops
    if device.type != "cuda":
        return 0.0
    name = torch.cuda.get_device_name(device)
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), 0.0)
    return peak if args.precision != "fp32" else peak / 2  # TF32 dense is half the bf16 peak


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    use_gpu = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda", 0) if use_gpu else torch.device("cpu")
    if use_gpu:
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
    cfg = bench_config(args, use_gpu)
    init_single_process("nccl" if use_gpu else "gloo")
    engine, n_params = build_engine(cfg, device)
    batch = random_batch(cfg, device)
    for _ in range(max(1, args.warmup)):
        step(engine, batch)
    flops = count_flops(engine, batch)
    sync(device)
    if use_gpu:
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step(engine, batch)
    sync(device)
    seconds = (time.perf_counter() - start) / args.steps
    samples_per_s = cfg.data.batch_size / seconds
    achieved = flops / seconds / 1e12
    peak = peak_tflops(args, device)
    name = torch.cuda.get_device_name(device) if use_gpu else "cpu"
    print(f"device={name} size={args.size} params={n_params / 1e6:.1f}M precision={args.precision} "
          f"zero={args.zero_stage} batch={cfg.data.batch_size} obs_per_tile={cfg.data.obs_per_tile} "
          f"extra_points={cfg.data.extra_points}")  # fmt: skip
    print(f"step_time_s={seconds:.4f} samples_per_s={samples_per_s:.1f} loss={float(loss.detach()):.4f}")
    print(f"model_tflop_per_step={flops / 1e12:.3f} achieved_tflops={achieved:.1f}", end=" ")
    print(f"mfu={achieved / peak:.3f} (peak {peak:.0f} TFLOP/s)" if peak else "mfu=n/a (no peak known for this device)")
    if use_gpu:
        print(f"peak_memory_gib={torch.cuda.max_memory_allocated(device) / 2**30:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
