"""Does the paper recipe learn? The paper config scaled to tiny, on synthetic data, CPU, one process.

Synthetic tiles carry a planted relation (each street view shows the land-cover class of
the RS pixel it was taken above, see ``gair/data/synthetic.py``). The tool trains the
paper recipe (``configs/pretrain_paper.yaml``: CROMA start, teachers, colour jitter,
no extra points, per-worker negatives, AdamW betas and weight decay, warmup + cosine)
scaled to the tiny model, with the teachers on and off, from small weight files in the
real CROMA and Hugging Face layouts; then scores held-out tiles with the evaluation job's
own code (``ManifestEmbedder`` + ``evaluate_retrieval``: NILI feature at each street
view's point -> that street view among all held-out ones) for the untrained
(CROMA-initialized) model and both trained ones, and prints the cosine of each model's
RS and SV features to the teachers' on the held-out tiles.

Scaled for a tiny CPU run (everything else is the paper config):
- sizes: tiny model, 32 px RS and street-view images, 32 location features, queue 256;
- batch: ``--batch`` samples (street views) per step, drawn as the training pipeline
  draws them, one step per batch (no accumulation), fp32, one process;
- learning rate: the reference's *peak* learning rate, 2.88e-4 (``--lr``), not its base_lr
  rule. The rule (1.5e-6 x batch / 256) reaches 2.88e-4 only at the reference's effective
  batch of 49152; at 64 it gives 3.75e-7, which barely moves the model (40 steps on one
  fixed batch: INCL 4.67 -> 4.59, where 2.88e-4 overfits it). Ten times the peak (3e-3)
  does not learn either: it cannot overfit one batch, and after 150 steps INCL is still
  ln 64 and the retrieval at chance;
- schedule: ``--steps`` steps, warmup the paper's share of them (10 of 300 epochs).

It runs the training loop in one process (no Ray, no DeepSpeed: the jobs' Ray Train path
is covered by ``tests/train/test_paper_recipe_job.py``), so it fits a 2-core machine
(the defaults took 8.5 and 11 minutes there).

The RS teacher is a frozen copy of the RS encoder as initialized (as in the reference), so
``distill_rs`` starts at its minimum, -distill_weight (cosine 1), and can only rise: it holds
the RS features near their start. The cosines to the teachers on held-out tiles show what
both terms do, against the run without teachers.

    python tools/recipe_learns.py
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
from gair.models.pretrain import BATCH_KEYS  # noqa: E402
from gair.train.init import build_pretrain_module  # noqa: E402
from gair.train.optim import build_lr_schedule, build_optimizer  # noqa: E402
from tests.train._weights import write_croma, write_sv_teacher  # noqa: E402

TINY = ModelConfig(size="tiny", rs_image_size=32, sv_image_size=32)
# The reference's peak learning rate: base_lr 1.5e-6 x effective batch 49152 (256 x accum 96 x 2 GPUs) / 256.
PAPER_PEAK_LR = 1.5e-6 * 256 * 96 * 2 / 256


def paper_tiny(tmp: Path, steps: int, distill: float, batch: int, lr: float = PAPER_PEAK_LR) -> PretrainConfig:
    sets = [
        "model.size=tiny", "model.rs_image_size=32", "model.sv_image_size=32", "model.location_rff_features=32",
        f"model.rs_init={write_croma(tmp / 'CROMA_base.pt', TINY)}",
        f"model.sv_teacher={write_sv_teacher(tmp / 'model.safetensors', TINY)}",
        f"loss.distill_weight={distill}", "loss.queue_size=256", f"data.batch_size={batch}",
        # The paper's peak learning rate itself instead of its base_lr rule (see the module docstring).
        "optim.base_lr=0", f"optim.lr={lr}", f"optim.warmup_steps={max(1, steps // 30)}", f"train.max_steps={steps}",
        "train.num_workers=1", "train.use_gpu=false", "train.precision=fp32", "train.grad_accum_steps=1",
    ]  # fmt: skip
    return load_config(PretrainConfig, REPO / "configs/pretrain_paper.yaml", sets)


def rows_of(manifest: str) -> list[dict]:
    return pq.read_table(manifest).to_pylist()


def batches(rows: list[dict], cfg: PretrainConfig, seed: int):
    """Endless training batches of exactly ``data.batch_size`` samples, as the training pipeline makes them.

    A sample is one visit of a tile (with ``obs_per_tile=1``, one per street view, see
    ``data.visit_all_observations``). Each epoch decodes every tile with new augmentation
    draws and shuffles all its samples (the pipeline's local shuffle buffer, over the
    whole small set); a short last batch is dropped.
    """
    b, epoch = cfg.data.batch_size, 0
    while True:
        spec = decode_spec(cfg.data, cfg.model, train=True, epoch=epoch)
        rng = np.random.default_rng([seed, epoch])
        d = decode.decode_rows([rows[j] for j in rng.permutation(len(rows))], spec)
        order = rng.permutation(np.flatnonzero(d["ok"]))
        for i in range(0, len(order) - b + 1, b):
            x = {k: torch.from_numpy(np.ascontiguousarray(d[k][order[i : i + b]])) for k in BATCH_KEYS}
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
    return module.model, untrained, history, module.teachers


def save_state(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.model.state_dict().items()}


@torch.no_grad()
def teacher_cosines(model, teachers, rows: list[dict], cfg: PretrainConfig) -> tuple[float, float]:
    """Mean cosine of the student's RS mean token and SV pooler output to the teachers' on held-out tiles.

    The distillation terms are -distill_weight x these cosines (computed on training batches).
    """
    model.eval()
    d = decode.decode_rows(rows, decode_spec(cfg.data, cfg.model, train=False))
    rs = torch.from_numpy(d["rs"][d["ok"]])
    mask = torch.from_numpy(d["sv_mask"][d["ok"]])
    sv = transforms.normalize_sv(torch.from_numpy(d["sv"][d["ok"]]), mask, cfg.data.sv_mean, cfg.data.sv_std)[mask]
    t_rs, t_sv = teachers.targets(rs, sv)
    cos_rs = torch.nn.functional.cosine_similarity(model.encode_rs(rs), t_rs, dim=-1).mean()
    cos_sv = torch.nn.functional.cosine_similarity(model.encode_sv(sv), t_sv, dim=-1).mean()
    return float(cos_rs), float(cos_sv)


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
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--tiles", type=int, default=96, help="training tiles (4 street views each)")
    p.add_argument("--heldout", type=int, default=32, help="held-out tiles (another seed)")
    p.add_argument("--batch", type=int, default=64, help="samples (street views) per step")
    p.add_argument("--lr", type=float, default=PAPER_PEAK_LR, help="peak learning rate (default: the paper's)")
    p.add_argument("--log-every", type=int, default=25)
    a = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="gair-learns-") as tmp_s:
        tmp = Path(tmp_s)
        train_m = synthetic.write_synthetic(str(tmp / "train"), tiles=a.tiles, obs_per_tile=4, seed=0)
        held_m = synthetic.write_synthetic(str(tmp / "heldout"), tiles=a.heldout, obs_per_tile=4, seed=1)
        rows, held_rows = rows_of(train_m), rows_of(held_m)
        results, teachers = {}, None
        for name, distill in (("teachers on", 0.2), ("teachers off", 0.0)):
            cfg = paper_tiny(tmp, a.steps, distill, a.batch, a.lr)
            print(
                f"{name}: {a.steps} steps, peak lr {cfg.peak_lr:.3g} (the base_lr rule would give "
                f"{1.5e-6 * a.batch / 256:.3g}), warmup {cfg.optim.warmup_steps}, {len(rows)} tiles x 4 street views, "
                f"batch {a.batch}",
                flush=True,
            )
            model, untrained_state, history, module_teachers = train(cfg, rows, a.log_every)
            teachers = teachers or module_teachers  # the same for both runs (same seed, same weight files)
            k = max(1, a.steps // 10)
            first = {m: np.mean([h[m] for h in history[:k]]) for m in history[0]}
            last = {m: np.mean([h[m] for h in history[-k:]]) for m in history[0]}
            cos = teacher_cosines(model, teachers, held_rows, cfg)
            results[name] = (retrieval(model, held_m, tmp, name.replace(" ", "-")), first, last, cos)
            if "untrained" not in results:
                model.load_state_dict(untrained_state)
                cos = teacher_cosines(model, teachers, held_rows, cfg)
                results["untrained"] = (retrieval(model, held_m, tmp, "untrained"), None, None, cos)
        print()
        r0 = results["untrained"][0]
        print(f"held-out NILI retrieval: {r0['n']} street views; chance median rank {r0['chance']['median_rank']:.1f}, "
              f"R@10 {r0['chance']['recall@10']:.3f}")  # fmt: skip
        for name, (r, first, last, cos) in results.items():
            line = f"  {name:13s} median rank {r['nili']['median_rank']:6.1f}  R@10 {r['nili']['recall@10']:.3f}"
            line += f"  | cos to teachers RS {cos[0]:.3f} SV {cos[1]:.3f}"
            if first is not None:
                terms = [t for t in ("loss", "distill_rs", "distill_sv") if t in first]
                line += "  | first/last tenth: " + " ".join(f"{t} {first[t]:.3f}->{last[t]:.3f}" for t in terms)
            print(line)
        print("  (the RS teacher is the RS encoder as initialized: cosine 1 at the start, distill_rs at its minimum)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
