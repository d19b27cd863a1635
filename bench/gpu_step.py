"""Samples/s and model FLOPs utilization of one GAIR pretraining step under DeepSpeed.

Standalone, one process, no Ray: the engine is the job's (``gair.train.engine.create_engine``:
the module, AdamW -- fused on GPU --, LR schedule and DeepSpeed config the job uses), fed
random batches in the contract layout, so the number is the model step alone (no data
plane). FLOPs are counted with ``torch.utils.flop_counter`` on one eager forward+backward.

Besides the timing it reports, on request:
- ``--profile FILE``: a torch.profiler table of one step (top kernels by device time and
  their share of the step), written to FILE (and a Chrome trace beside it with
  ``--trace``); the SDPA kernel of the RS attention shows up there by name;
- the SDPA backends that accept the RS attention's ALiBi float mask (CUDA only);
- host-device synchronisations inside one step (CUDA only, ``torch.cuda.set_sync_debug_mode``);
- the location queue's share: forward+backward of the location encoder on the queue alone.

    python bench/gpu_step.py                          # base, bf16 autocast, ZeRO-2, batch 64, on the GPU
    python bench/gpu_step.py --batch-size 128 --precision-mode native --compile --profile out/profile.txt
    python bench/gpu_step.py --size tiny --device cpu --precision fp32 --steps 2 --warmup 1 --batch-size 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from gair.configs import load_config  # noqa: E402
from gair.configs.train import PretrainConfig  # noqa: E402

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--size",
        default="base",
        choices=["tiny", "small", "base", "large"],
        help="model.size preset (tiny also shrinks the RS and SV images to 32 px)",
    )
    p.add_argument("--batch-size", type=int, default=64, help="tiles per step")
    p.add_argument("--obs-per-tile", type=int, default=4, help="street views per tile (data.obs_per_tile, K)")
    p.add_argument(
        "--extra-points", type=int, default=16, help="extra random query points per tile (data.extra_points, M)"
    )
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")
    p.add_argument(
        "--precision",
        default="bf16",
        choices=["fp32", "bf16", "fp16"],
        help="train.precision (on a GPU, fp32 matmuls run as TF32)",
    )
    p.add_argument(
        "--precision-mode",
        default="autocast",
        choices=["autocast", "native"],
        help="train.precision_mode: torch autocast, or DeepSpeed's native 16-bit parameters",
    )
    p.add_argument("--compile", action="store_true", help="train.compile: torch.compile the RS and SV encoders")
    p.add_argument("--activation-checkpointing", action="store_true", help="train.activation_checkpointing")
    p.add_argument("--zero-stage", type=int, default=2, help="train.zero_stage: DeepSpeed ZeRO stage 0-3 (one process)")
    p.add_argument(
        "--device", default="auto", choices=["auto", "cuda", "cpu"], help="auto: cuda when a GPU is visible, else cpu"
    )
    p.add_argument("--peak-tflops", type=float, default=0.0, help="device peak (dense); 0: from the GPU name")
    p.add_argument("--profile", default="", metavar="FILE", help="write a torch.profiler table of one step here")
    p.add_argument("--trace", action="store_true", help="with --profile: also a Chrome trace (FILE.json)")
    p.add_argument("--top", type=int, default=25, help="kernels in the profile table")
    p.add_argument("--json", default="", metavar="FILE", help="write the figures as JSON here")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override")
    return p.parse_args(argv)


def bench_config(args: argparse.Namespace, use_gpu: bool) -> PretrainConfig:
    sets = [
        f"model.size={args.size}",
        f"data.batch_size={args.batch_size}",
        f"data.obs_per_tile={args.obs_per_tile}",
        f"data.extra_points={args.extra_points}",
        f"train.precision={args.precision}",
        f"train.precision_mode={args.precision_mode}",
        f"train.compile={str(args.compile).lower()}",
        f"train.activation_checkpointing={str(args.activation_checkpointing).lower()}",
        f"train.zero_stage={args.zero_stage}",
        f"train.use_gpu={str(use_gpu).lower()}",
        "train.num_workers=1",
        "optim.warmup_steps=0",
    ]
    if args.size == "tiny":
        sets += ["model.rs_image_size=32", "model.sv_image_size=32"]
    return load_config(PretrainConfig, None, sets + list(args.set))


def random_batch(cfg: PretrainConfig, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch in the layout of docs/contracts.md (all observations real), as the data plane gives it."""
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
    batch["sv_index"] = batch["sv_mask"].reshape(-1).nonzero()[:, 0]  # found on the host, as gair.data does
    return {k: v.to(device) for k, v in batch.items()}


def init_single_process(backend: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    import deepspeed

    from gair.train.engine import skip_inference_shm_op

    skip_inference_shm_op(deepspeed)  # as the job does: no JIT build of an inference-only op
    deepspeed.init_distributed(dist_backend=backend)


def build_engine(cfg: PretrainConfig, device: torch.device):
    from gair.train.engine import create_engine

    engine = create_engine(cfg, device)
    n_params = sum(getattr(p, "ds_numel", p.numel()) for p in engine.module.parameters())
    return engine, n_params


def step(engine, batch) -> torch.Tensor:
    loss, _ = engine(batch)
    engine.backward(loss)
    engine.step()
    return loss


@contextlib.contextmanager
def eager_encoders(engine):
    """Run compiled encoders eagerly for a while (the FLOP counter sees eager ops only)."""
    model = engine.module.model
    saved = {m: m._compiled_call_impl for m in (model.rs_encoder, model.sv_encoder)}
    for m in saved:
        m._compiled_call_impl = None
    try:
        yield
    finally:
        for m, impl in saved.items():
            m._compiled_call_impl = impl


def count_flops(engine, batch) -> int:
    """Forward + backward FLOPs of one step (matmuls, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with eager_encoders(engine), counter:
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


def count_host_syncs(engine, batch, device: torch.device) -> tuple[int, list[str]]:
    """Host-device synchronisations in one step (CUDA's sync debug mode), with where they happen."""
    if device.type != "cuda":
        return -1, []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step(engine, batch)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    where = Counter(f"{Path(w.filename).name}:{w.lineno}" for w in syncs)
    return len(syncs), [f"{k} x{n}" for k, n in where.most_common(10)]


def sdpa_backends(engine, device: torch.device) -> dict[str, bool]:
    """Which SDPA kernels accept the RS attention as the model calls it (float ALiBi mask)."""
    if device.type != "cuda":
        return {}
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    rs = engine.module.model.rs_encoder
    h, N = rs.attn_bias.shape[0], rs.num_patches
    dt = torch.bfloat16
    q = torch.randn(2, h, N, rs.dim // h, device=device, dtype=dt)
    out = {}
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION):
        try:
            with sdpa_kernel([backend]), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                F.scaled_dot_product_attention(q, q, q, attn_mask=rs.attn_bias.to(device, dt))
            out[backend.name] = True
        except RuntimeError:
            out[backend.name] = False
    return out


def queue_share(engine, batch, device: torch.device, step_s: float, repeats: int = 5) -> dict[str, float]:
    """Forward + backward of the location encoder on the queue alone, and its share of a step."""
    module = engine.module
    q = module.queue.lonlat.float()
    if q.shape[0] == 0:
        return {"queue_size": 0}
    params = [p for p in module.model.location_encoder.parameters() if p.requires_grad]
    autocast = engine.torch_autocast_enabled()  # as the engine runs the module's forward
    ctx = torch.autocast(device.type, dtype=engine.torch_autocast_dtype()) if autocast else contextlib.nullcontext()
    times = []
    for _ in range(repeats + 1):
        sync(device)
        start = time.perf_counter()
        with ctx:
            out = module.model.encode_location(q, check=False)
        grads = torch.autograd.grad(out.float().square().mean(), params, allow_unused=True)
        sync(device)
        times.append(time.perf_counter() - start)
        del grads
    took = sorted(times[1:])[len(times[1:]) // 2]
    return {"queue_size": q.shape[0], "queue_encode_s": took, "queue_share_of_step": took / step_s}


def profile_step(engine, batch, device: torch.device, path: Path, top: int, trace: bool) -> str:
    """Profile one step; write the top kernels (device time) and their share to ``path``."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=False) as prof:
        step(engine, batch)
        sync(device)
    events = prof.key_averages()
    cuda = device.type == "cuda"

    def self_time(e) -> float:
        return (e.self_device_time_total if cuda else e.self_cpu_time_total) / 1e3  # ms

    kernels = [e for e in events if self_time(e) > 0 and (not cuda or e.device_type.name == "CUDA")]
    total = sum(self_time(e) for e in kernels) or 1.0
    kernels.sort(key=self_time, reverse=True)
    lines = [f"{'share':>6} {'ms':>9} {'calls':>6}  {'kernel' if cuda else 'op'}"]
    for e in kernels[:top]:
        lines.append(f"{self_time(e) / total:>6.1%} {self_time(e):>9.2f} {e.count:>6}  {e.key[:150]}")
    attn = [e.key for e in kernels if any(s in e.key.lower() for s in ("fmha", "flash", "attention", "sdpa", "cudnn"))]
    text = (
        f"one step, {'device' if cuda else 'CPU'} self time {total:.1f} ms over {len(kernels)} "
        f"{'kernels' if cuda else 'ops'}\n" + "\n".join(lines) + "\n\nattention kernels seen:\n  "
        + "\n  ".join(attn[:10] or ["(none)"]) + "\n"
    )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if trace:
        prof.export_chrome_trace(str(path.with_suffix(".json")))
    return text


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    use_gpu = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda", 0) if use_gpu else torch.device("cpu")
    if use_gpu:
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    cfg = bench_config(args, use_gpu)
    init_single_process("nccl" if use_gpu else "gloo")
    engine, n_params = build_engine(cfg, device)
    batch = random_batch(cfg, device)
    start = time.perf_counter()
    for _ in range(max(1, args.warmup)):
        step(engine, batch)
    sync(device)
    warmup_s = time.perf_counter() - start
    flops = count_flops(engine, batch)
    syncs, sync_where = count_host_syncs(engine, batch, device)
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
    figures = {
        "device": name, "size": args.size, "params_m": n_params / 1e6, "precision": args.precision,
        "precision_mode": args.precision_mode, "compile": args.compile,
        "activation_checkpointing": args.activation_checkpointing, "zero": args.zero_stage,
        "batch": cfg.data.batch_size, "obs_per_tile": cfg.data.obs_per_tile, "extra_points": cfg.data.extra_points,
        "warmup_s": warmup_s, "step_time_s": seconds, "samples_per_s": samples_per_s,
        "loss": float(loss.detach()), "model_tflop_per_step": flops / 1e12, "achieved_tflops": achieved,
        "mfu": achieved / peak if peak else None, "peak_tflops": peak or None,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if use_gpu else None,
        "host_syncs_per_step": syncs if use_gpu else None, "host_sync_sites": sync_where,
        "sdpa_backends_accepting_alibi_mask": sdpa_backends(engine, device),
    }  # fmt: skip
    figures.update(queue_share(engine, batch, device, seconds))
    print(f"device={name} size={args.size} params={n_params / 1e6:.1f}M precision={args.precision} "
          f"mode={args.precision_mode} compile={args.compile} act_ckpt={args.activation_checkpointing} "
          f"zero={args.zero_stage} batch={cfg.data.batch_size} obs_per_tile={cfg.data.obs_per_tile} "
          f"extra_points={cfg.data.extra_points}")  # fmt: skip
    print(
        f"step_time_s={seconds:.4f} samples_per_s={samples_per_s:.1f} loss={figures['loss']:.4f} warmup_s={warmup_s:.1f}"
    )
    print(f"model_tflop_per_step={flops / 1e12:.3f} achieved_tflops={achieved:.1f}", end=" ")
    print(f"mfu={achieved / peak:.3f} (peak {peak:.0f} TFLOP/s)" if peak else "mfu=n/a (no peak known for this device)")
    if use_gpu:
        print(f"peak_memory_gib={figures['peak_memory_gib']:.2f} host_syncs_per_step={syncs} {sync_where}")
        print(f"sdpa_backends_accepting_alibi_mask={figures['sdpa_backends_accepting_alibi_mask']}")
    if "queue_encode_s" in figures:
        print(f"queue={figures['queue_size']} queue_encode_s={figures['queue_encode_s']:.4f} "
              f"queue_share_of_step={figures['queue_share_of_step']:.3f}")  # fmt: skip
    if args.profile:
        text = profile_step(engine, batch, device, Path(args.profile), args.top, args.trace)
        print(f"profile written to {args.profile}\n" + "\n".join(text.splitlines()[: min(args.top, 12) + 2]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
