import math

import pytest
import torch
from torch import nn

from gair.configs.train import OptimConfig
from gair.train.optim import build_lr_schedule, build_optimizer, lr_factor, param_groups


def test_no_decay_on_biases_norms_and_1d_params():
    m = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    m.register_parameter("logit_scale", nn.Parameter(torch.ones(1)))
    decay, no_decay = param_groups(m, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert {p.ndim for p in decay["params"]} == {2}
    assert len(no_decay["params"]) == 5  # 2 biases, norm weight + bias, logit scale


def test_warmup_then_cosine_to_min_lr():
    cfg = OptimConfig(lr=1.0, min_lr=0.1, warmup_steps=4)
    assert [lr_factor(s, cfg, 20) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, cfg, 20) == pytest.approx(1.0)
    assert lr_factor(12, cfg, 20) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(20, cfg, 20) == pytest.approx(0.1)


def test_schedule_drives_the_optimizer():
    m = nn.Linear(3, 3)
    cfg = OptimConfig(lr=0.5, warmup_steps=2)
    opt = build_optimizer(m, cfg)
    sched = build_lr_schedule(opt, cfg, 10)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.25)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)
