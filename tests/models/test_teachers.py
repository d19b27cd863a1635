"""Frozen teachers: SV teacher from Hugging Face (4.x and 5.x names) or timm layouts, RS teacher copy."""

from __future__ import annotations

import pytest
import torch

from gair.configs.model import LossConfig
from gair.models._vit_layouts import hf_vit_state_dict
from gair.models.pretrain import GAIRPretrainModule
from gair.models.sv_encoder import SVEncoder
from gair.models.teachers import Teachers, copy_rs_teacher, load_sv_teacher
from tests.models._factory import tiny_cfg, tiny_model


def _sv_state(cfg, seed=1):
    torch.manual_seed(seed)
    enc = SVEncoder(cfg.sv_image_size, cfg.sv_patch_size, cfg.width, cfg.depth, cfg.sv_heads)
    return enc, enc.state_dict()


def _timm_layout(state):
    """timm's VisionTransformer names with the in21k tanh pooler as pre_logits.fc, plus a head."""
    out = {k.removeprefix("vit."): v for k, v in state.items() if k.startswith("vit.")}
    out |= {"pre_logits.fc.weight": state["pooler.weight"], "pre_logits.fc.bias": state["pooler.bias"]}
    return out | {"head.weight": torch.zeros(5, state["pooler.weight"].shape[0]), "head.bias": torch.zeros(5)}


@pytest.mark.parametrize("layout", ["hf4", "hf5", "hf5-prefixed", "timm"])
def test_sv_teacher_loads_every_layout(layout):
    cfg = tiny_cfg()
    enc, state = _sv_state(cfg)
    files = {
        "hf4": lambda: hf_vit_state_dict(state, major=4),
        "hf5": lambda: hf_vit_state_dict(state, major=5),
        "hf5-prefixed": lambda: {"vit." + k: v for k, v in hf_vit_state_dict(state, major=5).items()},
        "timm": lambda: _timm_layout(state),
    }
    teacher = load_sv_teacher(files[layout](), cfg)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(teacher(x), enc(x))
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training


def test_hf5_names_are_the_transformers_5_names():
    names = hf_vit_state_dict(_sv_state(tiny_cfg())[1], major=5)
    assert "layers.0.attention.q_proj.weight" in names and "layers.1.mlp.fc2.bias" in names
    assert "layers.0.attention.o_proj.weight" in names and "pooler.dense.weight" in names


def test_sv_teacher_unfilled_parameter_is_an_error():
    cfg = tiny_cfg()
    state = hf_vit_state_dict(_sv_state(cfg)[1], major=5)
    del state["layers.1.layernorm_after.weight"]
    with pytest.raises(KeyError, match=r"vit\.blocks\.1\.norm2\.weight"):
        load_sv_teacher(state, cfg)
    state = hf_vit_state_dict(_sv_state(cfg)[1], major=4)
    del state["pooler.dense.bias"]
    with pytest.raises(KeyError, match=r"pooler\.bias"):
        load_sv_teacher(state, cfg)


def _batch(B=2, K=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "rs": torch.rand(B, 10, 32, 32, generator=g),
        "sv": torch.randn(B, K, 3, 32, 32, generator=g),
        "sv_mask": torch.ones(B, K, dtype=torch.bool),
        "lonlat": torch.rand(B, K, 2, generator=g) * 20,
        "xy": torch.rand(B, K, 2, generator=g) * 2 - 1,
    }


def _module(distill=0.2):
    cfg = tiny_cfg()
    model = tiny_model()
    sv_teacher = load_sv_teacher(hf_vit_state_dict(_sv_state(cfg, seed=7)[1], major=5), cfg)
    teachers = Teachers(copy_rs_teacher(model.rs_encoder), sv_teacher)
    return GAIRPretrainModule(loss_cfg=LossConfig(queue_size=8, distill_weight=distill), model=model, teachers=teachers)


def test_teachers_hold_no_trainable_state_and_get_no_gradient():
    module = _module()
    names = {n for n, _ in module.named_parameters()} | set(module.state_dict())
    assert not any("teacher" in n for n in names)
    assert len(list(module.parameters())) == len(list(module.model.parameters())) + len(list(module.loss.parameters()))
    before = {k: v.clone() for k, v in module.teachers.state_dict().items()}
    module.train()
    loss, metrics = module(_batch())
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in module.teachers.parameters())
    assert not module.teachers.training
    assert all(torch.equal(v, before[k]) for k, v in module.teachers.state_dict().items())
    # The RS teacher is the initial RS encoder: its term is exactly -0.2 at the start.
    assert metrics["distill_rs"].item() == pytest.approx(-0.2, abs=1e-5)
    assert -0.2 <= metrics["distill_sv"].item() <= 0.2


def test_distill_terms_enter_the_loss():
    torch.manual_seed(0)
    with_t, m1 = _module(0.2)(_batch())
    torch.manual_seed(0)
    module = _module(0.2)
    object.__setattr__(module, "teachers", None)  # same model, teachers off
    without, _ = module(_batch())
    torch.testing.assert_close(with_t - without, m1["distill_rs"] + m1["distill_sv"])
    assert m1["loss"].item() == pytest.approx(with_t.item(), rel=1e-5)


def test_teachers_follow_the_module_dtype_and_device():
    module = _module().to(torch.float64)
    assert all(p.dtype == torch.float64 for p in module.teachers.parameters())


def test_distill_without_teachers_is_an_error():
    with pytest.raises(ValueError, match="teachers"):
        GAIRPretrainModule(tiny_cfg(), LossConfig(distill_weight=0.2))
