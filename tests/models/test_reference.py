"""The official-weights loader against outputs computed by the reference implementation.

``tests/models/data/reference_outputs.safetensors`` holds what github zpl99/GAIR (HEAD,
transformers 4.41 as its requirements pin) computed for seeded synthetic weights and
inputs; ``tools/reference_parity.py --reference-repo PATH --write-golden`` regenerates it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gair import load_reference_checkpoint
from gair.models._reference import convert_reference_state_dict, to_reference_state_dict
from tests.models._factory import tiny_model

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import reference_parity  # noqa: E402


@pytest.fixture(scope="module")
def reference_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ref") / "checkpoint.pth"
    state = reference_parity.synthetic_reference_state_dict(seed=0)
    # Reference-only extras that the loader must report, not silently drop.
    state["nerf_fn.layers.0.0.create_qkv.weight"] = torch.zeros(3, 3)
    state["logit_scale"] = torch.tensor(2.65)
    state["rs_encoder.head.weight"] = torch.zeros(10, 768)
    torch.save({"model": {"module." + k: v for k, v in state.items()}}, path)
    return path


@pytest.fixture(scope="module")
def loaded(reference_checkpoint):
    return load_reference_checkpoint(reference_checkpoint)


def test_outputs_match_the_reference_implementation_within_1e_4(loaded):
    golden = load_file(reference_parity.GOLDEN)
    ours = reference_parity.our_outputs(loaded, reference_parity.parity_inputs())
    assert set(ours) == {"encode_rs", "encode_sv", "encode_location", "query_rs_nili"}
    for name, value in ours.items():
        assert value.shape == golden[name].shape
        diff = (value - golden[name]).abs().max().item()
        assert diff < 1e-4, f"{name}: max |diff| {diff}"


def test_loader_returns_eval_mode_and_reports_every_key(loaded):
    assert not loaded.training
    report = loaded.load_report
    assert report.ok
    assert "module.logit_scale" in report.unused
    assert "module.nerf_fn.layers.0.0.create_qkv.weight" in report.unused
    assert "module.rs_encoder.head.weight" in report.unused
    assert len(report.loaded) == len(loaded.state_dict())


def test_unknown_and_missing_keys_are_reported(tmp_path, reference_checkpoint):
    state = torch.load(reference_checkpoint, weights_only=True)["model"]
    state["module.something_new.weight"] = torch.zeros(2)
    del state["module.imnet.bias"]
    path = tmp_path / "bad.pth"
    torch.save({"model": state}, path)
    with pytest.warns(UserWarning, match="unrecognised"):
        model = load_reference_checkpoint(path, strict=False)
    assert "module.something_new.weight" in model.load_report.unexpected
    assert "nili.bias" in model.load_report.missing
    with pytest.raises(RuntimeError, match=r"something_new.*nili\.bias"):
        load_reference_checkpoint(path)  # strict by default


def test_name_mapping_round_trips():
    ours = tiny_model().state_dict()
    back, report = convert_reference_state_dict(to_reference_state_dict(ours))
    assert report.unexpected == [] and set(back) == set(ours)
    assert all(torch.equal(back[k], ours[k]) for k in ours)


def test_rejects_non_state_dict(tmp_path):
    path = tmp_path / "x.pth"
    torch.save({"model": [1, 2, 3]}, path)
    with pytest.raises(TypeError, match="state dict"):
        load_reference_checkpoint(path)
