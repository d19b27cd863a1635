"""Does the paper recipe learn? The paper config scaled to tiny, on synthetic data, CPU, one process.

Synthetic tiles carry a planted relation (each street view shows the land-cover class of
the RS pixel it was taken above, see ``gair/data/synthetic.py``). The tool trains the
paper recipe (``configs/pretrain_paper.yaml``: CROMA start, teachers, colour jitter,
base_lr rule, no extra points, per-worker negatives) scaled to the tiny model, with the
teachers on and off, from small weight files in the real CROMA and Hugging Face layouts;
then scores held-out tiles with the evaluation job's own code (``ManifestEmbedder`` +
``evaluate_retrieval``: NILI feature at each street view's point -> that street view among
all held-out ones) for the untrained (CROMA-initialized) model and both trained ones.

It runs the training loop in one process (no Ray, no DeepSpeed: the jobs' Ray Train path
is covered by ``tests/train/test_paper_recipe_job.py``), so it fits a 2-core machine.

    python tools/recipe_learns.py --steps 150
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402

from gair.configs import load_config  # noqa: E402
from gair.configs.eval import EvalConfig  # noqa: E402
from gair.configs.model import ModelConfig  # noqa: E402
from gair.configs.train import PretrainConfig  # noqa: E402
from gair.data import decode, synthetic, transforms  # noqa: E402
from gair.data.pipeline import decode_spec  # noqa: E402
from gair.eval.extract import ManifestEmbedder, ModelPayload  # noqa: E402
from gair.eval.retrieval import decode_spec as eval_decode_spec  # noqa: E402
from gair.eval.retrieval import evaluate_retrieval  # noqa: E402
from gair.hub import save_pretrained  # noqa: E402
from gair.train.init import build_pretrain_module  # noqa: E402
from gair.train.optim import build_lr_schedule, build_optimizer  # noqa: E402
from tests.train._weights import write_croma, write_sv_teacher  # noqa: E402

TINY = ModelConfig(size="tiny", rs_image_size=32, sv_image_size=32)


def paper_tiny(tmp: Path, steps: int, distill: float, batch: int) -> PretrainConfig:
    sets = [
        "model.size=tiny", "model.rs_image_size=32", "model.sv_image_size=32", "model.location_rff_features=32",
        f"model.rs_init={write_croma(tmp / 'CROMA_base.pt', TINY)}",
        f"model.sv_teacher={write_sv_teacher(tmp / 'model.safetensors', TINY)}",
        f"loss.distill_weight={distill}", "loss.queue_size=256", f"data.batch_size={batch}",
        # base_lr scaled up with the model scaled down: 1.5e-6 x 8 / 256 would not move a tiny model.
        "optim.base_lr=0.05", f"optim.warmup_steps={max(1, steps // 20)}", f"train.max_steps={steps}",
        "train.num_workers=1", "train.use_gpu=false", "train.precision=fp32", "train.grad_accum_steps=1",
    ]  # fmt: skip
    return load_config(PretrainConfig, REPO / "configs/pretrain_paper.yaml", sets)


def rows_of(manifest: str) -> list[dict]:
    return pq.read_table(manifest).to_pylist()


def batches(rows: list[dict], cfg: PretrainConfig, seed: int):
    """Endless training batches: each epoch a new order and new augmentation draws."""
    b, epoch = cfg.data.batch_size, 0
    while True:
        spec = decode_spec(cfg.data, cfg.model, train=True, epoch=epoch)
        order = np.random.default_rng([seed, epoch]).permutation(len(rows))
        for i in range(0, len(order) - b + 1, b):
            d = decode.decode_rows([rows[j] for j in order[i : i + b]], spec)
            x = {k: torch.from_numpy(np.ascontiguousarray(d[k])) for k in ("rs", "sv", "sv_mask", "lonlat", "xy")}
            x["sv"] = transforms.normalize_sv(x["sv"], x["sv_mask"], cfg.data.sv_mean, cfg.data.sv_std)
            yield x
        epoch += 1


def train(cfg: PretrainConfig, rows: list[dict], log_every: int):
    torch.manual_seed(cfg.train.seed)
    module = build_pretrain_module(cfg, log=lambda _: None)
    untrained = save_state(module)
    opt = build_optimizer(module, cfg.optim, peak_lr=cfg.peak_lr)
    sched = build_lr_schedule(opt, cfg.optim, cfg.train.max_steps, peak_lr=cfg.peak_lr)
    history = []
    module.train()
    for step, x in zip(range(1, cfg.train.max_steps + 1), batches(rows, cfg, cfg.data.seed)):
        loss, metrics = module(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history.append({k: float(v) for k, v in metrics.items()})
        if step % log_every == 0:
            h = history[-log_every:]
            mean = {k: np.mean([m[k] for m in h]) for k in ("loss", "distill_rs", "distill_sv") if k in h[0]}
            print(f"  step {step:4d} " + " ".join(f"{k}={v:.4f}" for k, v in mean.items()), flush=True)
    return module.model, untrained, history


def save_state(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.model.state_dict().items()}


def retrieval(model, heldout_manifest: str, tmp: Path, name: str) -> dict:
    export = save_pretrained(model, tmp / f"export-{name}")
    ecfg = EvalConfig()
    ecfg = dataclasses.replace(ecfg, retrieval=dataclasses.replace(ecfg.retrieval, modes=("nili",), max_obs_per_tile=8))
    spec = eval_decode_spec(ecfg, model.cfg)
    embedder = ManifestEmbedder(
        {"ref": ModelPayload.from_dir(export)}, spec, ("nili",), (0.5312621, 0.5579852, 0.5691087),
        (0.2321560, 0.2327560, 0.2824430),
    )  # fmt: skip
    table = pq.read_table(heldout_manifest)
    result = evaluate_retrieval(embedder(table), table.num_rows, ecfg)
    return {"nili": result.metrics["nili"], "chance": result.chance, "n": result.n_queries}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--tiles", type=int, default=96, help="training tiles (4 street views each)")
    p.add_argument("--heldout", type=int, default=32, help="held-out tiles (another seed)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--log-every", type=int, default=25)
    a = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="gair-learns-") as tmp_s:
        tmp = Path(tmp_s)
        train_m = synthetic.write_synthetic(str(tmp / "train"), tiles=a.tiles, obs_per_tile=4, seed=0)
        held_m = synthetic.write_synthetic(str(tmp / "heldout"), tiles=a.heldout, obs_per_tile=4, seed=1)
        rows = rows_of(train_m)
        results = {}
        for name, distill in (("teachers on", 0.2), ("teachers off", 0.0)):
            cfg = paper_tiny(tmp, a.steps, distill, a.batch)
            print(f"{name}: {a.steps} steps, lr {cfg.peak_lr:.3g}, {len(rows)} tiles, batch {a.batch}", flush=True)
            model, untrained_state, history = train(cfg, rows, a.log_every)
            k = max(1, a.steps // 10)
            first = {m: np.mean([h[m] for h in history[:k]]) for m in history[0]}
            last = {m: np.mean([h[m] for h in history[-k:]]) for m in history[0]}
            results[name] = (retrieval(model, held_m, tmp, name.replace(" ", "-")), first, last)
            if "untrained" not in results:
                model.load_state_dict(untrained_state)
                results["untrained"] = (retrieval(model, held_m, tmp, "untrained"), None, None)
        print()
        r0 = results["untrained"][0]
        print(f"held-out NILI retrieval: {r0['n']} street views; chance median rank {r0['chance']['median_rank']:.1f}, "
              f"R@10 {r0['chance']['recall@10']:.3f}")  # fmt: skip
        for name, (r, first, last) in results.items():
            line = f"  {name:13s} median rank {r['nili']['median_rank']:6.1f}  R@10 {r['nili']['recall@10']:.3f}"
            if first is not None:
                terms = [t for t in ("loss", "distill_rs", "distill_sv") if t in first]
                line += "  | first/last tenth: " + " ".join(f"{t} {first[t]:.3f}->{last[t]:.3f}" for t in terms)
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
