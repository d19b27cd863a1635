"""Check our model against the reference implementation (github zpl99/GAIR) on the same weights.

The reference code is CC BY-NC and is not part of this repository: fetch it yourself and
pass its path. Weights are synthetic but realistic (seeded numpy draws in the reference
layout, so they do not depend on torch's RNG); the official ``checkpoint.pth`` can be
given with ``--checkpoint`` instead.

    python tools/reference_parity.py --reference-repo /path/to/GAIR            # compare, print max |diff|
    python tools/reference_parity.py --reference-repo PATH --write-golden       # refresh the test fixture

Without ``--reference-repo`` it compares against the stored outputs of the reference
(``tests/models/data/reference_outputs.safetensors``), which is what the test suite does.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from gair.configs.model import ModelConfig
from gair.models._reference import load_reference_checkpoint, to_reference_state_dict
from gair.models.gair import GAIR

GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "models" / "data" / "reference_outputs.safetensors"
SIGMAS = (1.0, 16.0, 256.0)


def synthetic_reference_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A base-size state dict in the reference layout, filled from a seeded numpy RNG."""
    with torch.device("meta"):
        layout = to_reference_state_dict(GAIR(ModelConfig(size="base")).state_dict())
    rng = np.random.default_rng(seed)
    out = {}
    for key in sorted(layout):
        shape = tuple(layout[key].shape)
        if key.endswith("capsule.0.b"):
            branch = int(key.split("LocEnc")[1].split(".")[0])
            values = rng.standard_normal(shape) * SIGMAS[branch]
        elif ("norm" in key or "layernorm" in key) and key.endswith("weight"):
            values = 1.0 + 0.1 * rng.standard_normal(shape)
        else:
            values = 0.02 * rng.standard_normal(shape)
        out[key] = torch.from_numpy(values.astype(np.float32))
    return out


def parity_inputs(seed: int = 1, batch: int = 2, queries: int = 3) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    f32 = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32))  # noqa: E731
    return {
        "rs": f32(rng.uniform(0, 1, (batch, 10, 96, 96))),
        "sv": f32(rng.standard_normal((batch, 3, 224, 224))),
        "lonlat": f32(np.stack([rng.uniform(-180, 180, batch), rng.uniform(-80, 80, batch)], 1)),
        "xy": f32(rng.uniform(-0.98, 0.98, (batch, queries, 2))),
    }


@torch.no_grad()
def our_outputs(model: GAIR, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        "encode_rs": model.encode_rs(x["rs"]),
        "encode_sv": model.encode_sv(x["sv"]),
        "encode_location": model.encode_location(x["lonlat"]),
        "query_rs_nili": model.query_rs(x["rs"], x["xy"], mode="nili"),
    }


def _import_reference(repo: Path):
    """Import the reference ``gair/model.py`` as ``gair_reference.model`` (our package owns ``gair``)."""
    import importlib.util  # noqa: PLC0415

    pkg_dir = repo / "gair"
    spec = importlib.util.spec_from_file_location(
        "gair_reference", pkg_dir / "__init__.py", submodule_search_locations=[str(pkg_dir)]
    )
    pkg = importlib.util.module_from_spec(spec)
    sys.modules["gair_reference"] = pkg
    # Skip the package __init__ (it pulls in preprocessing deps); load model.py directly.
    spec_m = importlib.util.spec_from_file_location("gair_reference.model", pkg_dir / "model.py")
    module = importlib.util.module_from_spec(spec_m)
    sys.modules["gair_reference.model"] = module
    spec_m.loader.exec_module(module)
    return module


@torch.no_grad()
def reference_outputs(repo: Path, ckpt: Path, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    ref = _import_reference(repo).GAIRModel.from_checkpoint(str(ckpt))
    info = ref.load_info
    print(
        f"reference load: {info['loaded']} tensors, missing {len(info['missing_keys'])}, shape mismatches {len(info['shape_mismatch'])}"
    )
    B, K = x["xy"].shape[:2]
    # The reference maps (lon, lat) inside a [lon_min, lat_max, lon_max, lat_min] box to
    # [-1, 1]; with the box (-1, 1, 1, -1) a point (x, y) is (lon, lat) = (x, -y).
    bbox = torch.tensor([[-1.0, 1.0, 1.0, -1.0]]).repeat(B, 1)
    local = []
    for k in range(K):
        xy = x["xy"][:, k]
        _, feat = ref.query_localized_rs(x["rs"], torch.stack([xy[:, 0], -xy[:, 1]], 1), bbox, mode="nili")
        local.append(feat)
    return {
        "encode_rs": ref.encode_rs(x["rs"]),
        "encode_sv": ref.encode_sv(x["sv"]),
        "encode_location": ref.encode_location(x["lonlat"]),
        "query_rs_nili": torch.stack(local, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference-repo", type=Path, help="checkout of github zpl99/GAIR (HEAD)")
    parser.add_argument("--checkpoint", type=Path, help="official checkpoint.pth (default: synthetic weights)")
    parser.add_argument("--write-golden", action="store_true", help=f"store the reference outputs in {GOLDEN}")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()

    x = parity_inputs()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint
        if ckpt is None:
            ckpt = Path(tmp) / "checkpoint.pth"
            torch.save({"model": synthetic_reference_state_dict()}, ckpt)
        ours = our_outputs(load_reference_checkpoint(ckpt), x)
        if args.reference_repo:
            expected = reference_outputs(args.reference_repo, ckpt, x)
        else:
            expected = load_file(GOLDEN)
    worst = 0.0
    for name, value in ours.items():
        diff = (value - expected[name]).abs().max().item()
        worst = max(worst, diff)
        print(f"{name:16s} shape {tuple(value.shape)}  max |ours - reference| = {diff:.3e}")
    if args.write_golden and args.reference_repo:
        save_file({k: v.contiguous() for k, v in expected.items()}, GOLDEN)
        print(f"wrote {GOLDEN}")
    ok = worst <= args.tolerance
    print(f"{'PASS' if ok else 'FAIL'}: worst {worst:.3e} (tolerance {args.tolerance:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
