"""One training step of ours against the reference training code (first commit of github zpl99/GAIR).

The reference training code (``model_cl_RS_sc.py`` with ``croma/``, ``nif/``, ``util/``,
``location_encoder/`` of commit 9c5edce) is CC BY-NC and not part of this repository:
check it out yourself and pass its path. It needs ``transformers`` (4.x or 5.x) and
``einops``; neither is a dependency of the project.

    git -C GAIR archive 9c5edce | tar -x -C /tmp/gair_9c5edce
    python tools/reference_train_parity.py --reference-repo /tmp/gair_9c5edce                # compare
    python tools/reference_train_parity.py --reference-repo /tmp/gair_9c5edce --write-golden # refresh the fixture

Without ``--reference-repo`` it compares against the stored reference outputs
(``tests/models/data/reference_train_step.safetensors``), which is what the test suite does.

Both sides get the same base-size weights (seeded numpy draws: the student in the
reference release layout with the final RS LayerNorm, a CROMA-layout RS teacher that
differs from the student, a Hugging Face-layout in21k-shaped SV teacher), the same batch
(one street view per RS tile, as the reference) and the same 4096-entry location queue;
teachers on (weight 0.2), per-worker negatives, no extra points, fixed tau 0.07.

Deliberate differences, and how the comparison bridges them:
- Query points. The reference computes ``coord = ((lon - lon_min) / width, (lat_max - lat) /
  height)`` inside the tile's box, i.e. in [0, 1], and its NILI treats ``coord[0]`` as the
  row and ``coord[1]`` as the column (transposed, one quadrant). We use HEAD's [-1, 1] with
  x to the right. For each sample, the tool builds the box so that the reference's coord is
  (y, x) of our point in [-1, 1]: ``lon_min = lon - y``, ``lat_max = lat + x``, sides of 1
  degree. The street view's own (lon, lat) goes to the location encoder unchanged.
- NILI's offset input. The reference's ``imnet`` reads the cell offset as (row, col); ours
  as (x, y): our ``nili.weight`` is the reference's with its last two columns swapped.
- Dropout. The reference's SV student has attention dropout 0.1; the step is compared in
  eval mode on the reference side (no dropout; nothing else differs between its modes).
- CPU. The reference calls ``.cuda()`` on two tensors; the tool makes that a no-op, and
  starts a one-process gloo group for its ``all_gather`` of the queue update.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from gair.configs.model import LossConfig, ModelConfig
from gair.models._reference import convert_reference_state_dict, to_reference_state_dict
from gair.models._vit_layouts import convert_vit_state_dict, hf_vit_state_dict
from gair.models.croma import croma_checkpoint_layout, load_croma_into_rs_encoder
from gair.models.gair import GAIR
from gair.models.pretrain import GAIRPretrainModule
from gair.models.rs_encoder import RSEncoder
from gair.models.sv_encoder import SVEncoder
from gair.models.teachers import Teachers, load_sv_teacher

GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "models" / "data" / "reference_train_step.safetensors"
TERMS = ("incl_sv_rs", "incl_rs_sv", "secl_sv", "secl_rs", "distill_sv", "distill_rs", "total")
SIGMAS = (1.0, 16.0, 256.0)
QUEUE = 4096  # the reference's fixed queue length
DISTILL = 0.2  # the reference's teacher_alpha


def model_config() -> ModelConfig:
    return ModelConfig(size="base", rs_final_norm=True)


def _fill(layout: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    out = {}
    for key in sorted(layout):
        shape = layout[key]
        if key.endswith("capsule.0.b"):
            values = rng.standard_normal(shape) * SIGMAS[int(key.split("LocEnc")[1].split(".")[0])]
        elif "norm" in key and key.endswith("weight"):
            values = 1.0 + 0.1 * rng.standard_normal(shape)
        else:
            values = 0.02 * rng.standard_normal(shape)
        out[key] = torch.from_numpy(values.astype(np.float32))
    return out


def synthetic_weights(seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Student (reference layout), RS teacher (CROMA s2_encoder layout), SV teacher (HF 4.x layout)."""
    cfg = model_config()
    with torch.device("meta"):
        student = {k: tuple(v.shape) for k, v in to_reference_state_dict(GAIR(cfg).state_dict()).items()}
        sv = SVEncoder(cfg.sv_image_size, cfg.sv_patch_size, cfg.width, cfg.depth, cfg.sv_heads).state_dict()
        sv_layout = {k: tuple(v.shape) for k, v in hf_vit_state_dict(sv, major=4).items()}
    rs_layout = croma_checkpoint_layout(dim=cfg.width, depth=cfg.depth, s2_channels=len(cfg.rs_bands))["s2_encoder"]
    return {
        "student": _fill(student, seed),
        "rs_teacher": _fill(rs_layout, seed + 1),
        "sv_teacher": _fill(sv_layout, seed + 2),
    }


def train_inputs(seed: int = 1, batch: int = 4) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    f32 = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32))  # noqa: E731
    lonlat = lambda n: np.stack([rng.uniform(-180, 180, n), rng.uniform(-80, 80, n)], 1)  # noqa: E731
    return {
        "rs": f32(rng.uniform(0, 1, (batch, 10, 96, 96))),
        "sv": f32(rng.standard_normal((batch, 3, 224, 224))),
        "lonlat": f32(lonlat(batch)),
        "xy": f32(rng.uniform(-0.95, 0.95, (batch, 2))),
        "queue": f32(lonlat(QUEUE)),
    }


def swap_offset_columns(weight: torch.Tensor) -> torch.Tensor:
    """imnet (row, col) offset columns <-> nili (x, y) ones: the last two input columns swapped."""
    out = weight.clone()
    out[:, -2:] = weight[:, [-1, -2]]
    return out


def build_ours(weights: dict[str, dict[str, torch.Tensor]]) -> GAIRPretrainModule:
    cfg = model_config()
    model = GAIR(cfg)
    state, report = convert_reference_state_dict(weights["student"])
    if not report.ok:
        raise RuntimeError(report.summary())
    state["nili.weight"] = swap_offset_columns(state["nili.weight"])
    model.load_state_dict(state, strict=True)
    rs_teacher = RSEncoder(
        len(cfg.rs_bands), cfg.rs_image_size, cfg.rs_patch_size, cfg.width, cfg.depth, cfg.rs_heads, final_norm=True
    )
    load_croma_into_rs_encoder(rs_teacher, {"s2_encoder": weights["rs_teacher"]})
    teachers = Teachers(rs_teacher, load_sv_teacher(weights["sv_teacher"], cfg))
    loss = LossConfig(queue_size=QUEUE, gather_negatives=False, extra_points_weight=0.0, distill_weight=DISTILL)
    return GAIRPretrainModule(cfg, loss, model=model, teachers=teachers)


def our_step(weights, x) -> dict[str, torch.Tensor]:
    module = build_ours(weights).train()
    module.queue.lonlat.copy_(x["queue"])
    B = x["rs"].shape[0]
    batch = {
        "rs": x["rs"],
        "sv": x["sv"][:, None],
        "sv_mask": torch.ones(B, 1, dtype=torch.bool),
        "lonlat": x["lonlat"][:, None],
        "xy": x["xy"][:, None],
    }
    total, metrics = module(batch)
    out = {k: metrics[k].detach().reshape(()) for k in TERMS if k != "total"}
    out["total"] = total.detach().reshape(())
    return out


# ------------------------------------------------------------------------- reference


@contextlib.contextmanager
def _reference_environment(repo: Path, workdir: Path):
    """The reference importable from ``repo``, run from ``workdir``, ``.cuda()`` a no-op, a 1-process group."""
    import torch.distributed as dist  # noqa: PLC0415

    cuda, cwd = torch.Tensor.cuda, os.getcwd()
    sys.path.insert(0, str(repo))
    torch.Tensor.cuda = lambda self, *a, **k: self
    started = False
    if not dist.is_initialized():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
        started = True
    os.chdir(workdir)
    try:
        yield
    finally:
        os.chdir(cwd)
        torch.Tensor.cuda = cuda
        sys.path.remove(str(repo))
        if started:
            dist.destroy_process_group()


def _hf_names(ours_sv: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    import transformers  # noqa: PLC0415

    return hf_vit_state_dict(ours_sv, major=int(transformers.__version__.split(".")[0]))


def reference_step(repo: Path, weights, x) -> dict[str, torch.Tensor]:
    import transformers  # noqa: PLC0415

    student = weights["student"]
    part = lambda prefix: {k[len(prefix) :]: v for k, v in student.items() if k.startswith(prefix)}  # noqa: E731
    sv_teacher_hf = _hf_names(convert_vit_state_dict(weights["sv_teacher"]).state)

    def from_pretrained(cls, name, *args, **kwargs):  # in21k: ViTConfig's defaults are ViT-B/16 at 224
        assert name == "google/vit-base-patch16-224-in21k", name
        model = transformers.ViTModel(transformers.ViTConfig())
        model.load_state_dict(sv_teacher_hf, strict=True)
        return model

    with tempfile.TemporaryDirectory() as tmp, _reference_environment(repo, Path(tmp)):
        # PretrainedCROMA reads ./CROMA_base.pt (12-band input Linear, which it drops).
        croma = dict(weights["rs_teacher"])
        croma["linear_input.weight"] = torch.zeros(768, 8 * 8 * 12)
        torch.save({"s2_encoder": croma, "s2_GAP_FFN": {}}, Path(tmp) / "CROMA_base.pt")
        saved = transformers.ViTModel.from_pretrained
        transformers.ViTModel.from_pretrained = classmethod(from_pretrained)
        try:
            import model_cl_RS_sc  # noqa: PLC0415

            ref = model_cl_RS_sc.RSSV_LIIF_style(rs_input_size=96, sv_input_size=224)
        finally:
            transformers.ViTModel.from_pretrained = saved
        ref.rs_encoder.s2_encoder.load_state_dict(part("rs_encoder.s2_encoder."), strict=True)
        ref.rs_encoder_teacher.s2_encoder.load_state_dict(weights["rs_teacher"], strict=True)
        ref.sv_encoder.load_state_dict(_hf_names(convert_vit_state_dict(part("sv_encoder.")).state), strict=True)
        ref.location_encoder.load_state_dict(part("location_encoder."), strict=True)
        ref.imnet.load_state_dict(part("imnet."), strict=True)
        ref.optical_proj.load_state_dict(part("optical_proj."), strict=True)
        ref.queue_for_location.copy_(x["queue"].T)
        ref.eval()

        lon, lat = x["lonlat"][:, 0], x["lonlat"][:, 1]
        px, py = x["xy"][:, 0], x["xy"][:, 1]
        # Box so that the reference's (x_rel, y_rel) = (our y, our x): see the module docstring.
        lon_min, lat_max = lon - py, lat + px
        bbox = torch.stack([lon_min, lat_max, lon_min + 1.0, lat_max - 1.0], 1)

        ce, cos = [], []
        cross_entropy = F.cross_entropy
        F.cross_entropy = lambda *a, **k: ce.append(cross_entropy(*a, **k)) or ce[-1]
        hook = ref.cos.register_forward_hook(lambda m, i, o: cos.append(o))
        try:
            with torch.no_grad():
                total = ref(x["rs"], x["sv"], sv_coordinate=x["lonlat"].clone(), bbox_information=bbox)
        finally:
            F.cross_entropy = cross_entropy
            hook.remove()
    # Call order in contrastive_loss: moco(sv, loc), moco(rs, loc), CE(sv -> rs), CE(rs -> sv);
    # in distillation_loss: cos(SV student, SV teacher), cos(RS student, RS teacher).
    return {
        "secl_sv": ce[0],
        "secl_rs": ce[1],
        "incl_sv_rs": ce[2],
        "incl_rs_sv": ce[3],
        "distill_sv": -DISTILL * cos[0].mean(),
        "distill_rs": -DISTILL * cos[1].mean(),
        "total": total,
    }


def compare(ours: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], tolerance: float) -> bool:
    worst = 0.0
    for name in TERMS:
        a, b = float(ours[name]), float(expected[name])
        rel = abs(a - b) / max(abs(b), 1e-12)
        worst = max(worst, rel)
        print(f"{name:11s} ours {a:+.7f}  reference {b:+.7f}  rel diff {rel:.2e}")
    ok = worst <= tolerance
    print(f"{'PASS' if ok else 'FAIL'}: worst relative difference {worst:.2e} (tolerance {tolerance:g})")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference-repo", type=Path, help="checkout of github zpl99/GAIR at commit 9c5edce")
    parser.add_argument("--write-golden", action="store_true", help=f"store the reference outputs in {GOLDEN}")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest relative difference per term")
    args = parser.parse_args()
    if args.write_golden and not args.reference_repo:
        parser.error("--write-golden needs --reference-repo")
    torch.manual_seed(0)
    weights, x = synthetic_weights(), train_inputs()
    ours = our_step(weights, x)
    if args.reference_repo:
        if not (args.reference_repo / "model_cl_RS_sc.py").is_file():
            parser.error(f"{args.reference_repo} has no model_cl_RS_sc.py (check out commit 9c5edce)")
        expected = reference_step(args.reference_repo.resolve(), weights, x)
    else:
        expected = load_file(GOLDEN)
    ok = compare(ours, expected, args.tolerance)
    if args.write_golden:
        save_file({k: v.detach().reshape(()).contiguous() for k, v in expected.items()}, GOLDEN)
        print(f"wrote {GOLDEN}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
