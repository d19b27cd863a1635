"""``load_reference_checkpoint``: transformers 4.x and 5.x names, and unfilled parameters are errors."""

from __future__ import annotations

import re

import pytest
import torch

from gair import load_reference_checkpoint
from gair.models._reference import to_reference_state_dict
from gair.models._vit_layouts import hf_vit_state_dict
from tests.models._factory import tiny_cfg, tiny_model


def _checkpoint(tmp_path, major: int, drop: str | None = None):
    model = tiny_model(seed=3)
    ref = to_reference_state_dict(model.state_dict())  # transformers 4.x names
    if major == 5:
        sv = {k.removeprefix("sv_encoder."): v for k, v in model.state_dict().items() if k.startswith("sv_encoder.")}
        ref = {k: v for k, v in ref.items() if not k.startswith("sv_encoder.")}
        ref |= {"sv_encoder." + k: v for k, v in hf_vit_state_dict(sv, major=5).items()}
    if drop:
        ref = {k: v for k, v in ref.items() if not re.fullmatch(drop, k)}
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": ref}, path)
    return model, path


@pytest.mark.parametrize("major", [4, 5])
def test_both_transformers_layouts_load_every_parameter(tmp_path, major):
    model, path = _checkpoint(tmp_path, major)
    loaded = load_reference_checkpoint(path, tiny_cfg())
    assert loaded.load_report.ok and not loaded.load_report.missing
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_unfilled_parameter_is_an_error_naming_it(tmp_path):
    _, path = _checkpoint(tmp_path, 5, drop=r"sv_encoder\.layers\.1\.attention\.o_proj\.weight")
    with pytest.raises(RuntimeError, match=r"sv_encoder\.vit\.blocks\.1\.attn\.proj\.weight"):
        load_reference_checkpoint(path, tiny_cfg())
    with pytest.warns(UserWarning, match="attn.proj.weight"):
        loaded = load_reference_checkpoint(path, tiny_cfg(), strict=False)
    assert loaded.load_report.missing == ["sv_encoder.vit.blocks.1.attn.proj.weight"]
