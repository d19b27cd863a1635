import math

import pytest
import torch
import torch.nn.functional as F

from gair.configs.model import LossConfig
from gair.losses.contrastive import GAIRLoss


def _inputs(N=6, E=4, Q=10, D=8, seed=0, mask=None):
    g = torch.Generator().manual_seed(seed)
    t = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    mask = torch.ones(N, dtype=torch.bool) if mask is None else mask
    return [t(N, D), t(N, D), mask, t(N, D), t(E, D), t(E, D), t(Q, D)]


def _naive(s, r, mask, loc, r_extra, loc_extra, neg, tau):
    """The method notes written out row by row."""
    n = lambda x: x / x.norm(dim=-1, keepdim=True)  # noqa: E731
    s, r, loc, r_extra, loc_extra, neg = map(n, (s, r, loc, r_extra, loc_extra, neg))
    s, r, loc = s[mask], r[mask], loc[mask]
    labels = torch.arange(len(s))
    incl_sr = F.cross_entropy(s @ r.T / tau, labels)
    incl_rs = F.cross_entropy(r @ s.T / tau, labels)

    def secl(q, pos):
        total = 0.0
        for i in range(len(q)):
            logits = torch.cat([(q[i] * pos[i]).sum()[None], q[i] @ neg.T]) / tau
            total = total - torch.log_softmax(logits, 0)[0]
        return total / len(q)

    return {
        "incl_sv_rs": incl_sr,
        "incl_rs_sv": incl_rs,
        "secl_sv": secl(s, loc),
        "secl_rs": secl(r, loc),
        "secl_extra": secl(r_extra, loc_extra),
    }


def test_matches_naive_formulas_with_padding():
    mask = torch.tensor([1, 1, 0, 1, 0, 1], dtype=torch.bool)
    args = _inputs(mask=mask)
    loss_fn = GAIRLoss(LossConfig(temperature=0.1))
    total, metrics = loss_fn(*args)
    naive = _naive(*args, tau=0.1)
    for k, v in naive.items():
        assert metrics[k].item() == pytest.approx(v.item(), rel=1e-5), k
    expected = (
        (naive["incl_sv_rs"] + naive["incl_rs_sv"]) / 2
        + (naive["secl_sv"] + naive["secl_rs"]) / 2
        + naive["secl_extra"]
    )
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert metrics["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert metrics["temperature"].item() == pytest.approx(0.1)
    assert metrics["observations"].item() == 4


def test_padded_rows_do_not_change_the_loss():
    args = _inputs(N=4)
    base, _ = GAIRLoss()(*args)
    padded = [torch.cat([a, torch.randn(2, *a.shape[1:])]) if i in (0, 1, 3) else a for i, a in enumerate(args)]
    padded[2] = torch.tensor([1, 1, 1, 1, 0, 0], dtype=torch.bool)
    again, _ = GAIRLoss()(*padded)
    assert again.item() == pytest.approx(base.item(), rel=1e-6)


def test_aligned_embeddings_give_lower_loss():
    s, r, mask, loc, re, le, neg = _inputs(N=8, D=32)
    aligned, _ = GAIRLoss()(s, s.clone(), mask, s.clone(), re, re.clone(), neg)
    random, _ = GAIRLoss()(s, r, mask, loc, re, le, neg)
    assert aligned.item() < random.item() / 2


def test_temperature_fixed_or_learnable_and_clamped():
    fixed = GAIRLoss(LossConfig(temperature=0.07))
    assert not any(True for _ in fixed.parameters())
    assert fixed.logit_scale.shape == (1,)  # DeepSpeed needs >= 1-dim
    learn = GAIRLoss(LossConfig(temperature=0.07, learnable_temperature=True))
    (p,) = list(learn.parameters())
    assert p.shape == (1,) and p.item() == pytest.approx(math.log(1 / 0.07))
    total, m = learn(*_inputs())
    total.backward()
    assert p.grad is not None and p.grad.abs().item() > 0
    assert m["temperature"].item() == pytest.approx(0.07)
    clamped = GAIRLoss(LossConfig(temperature=0.07, learnable_temperature=True, max_logit_scale=10.0))
    assert clamped(*_inputs())[1]["temperature"].item() == pytest.approx(1 / 10.0)  # 1/0.07 > 10


def test_weights_select_terms():
    args = _inputs()
    only_incl, m = GAIRLoss(LossConfig(secl_weight=0, extra_points_weight=0))(*args)
    assert only_incl.item() == pytest.approx(((m["incl_sv_rs"] + m["incl_rs_sv"]) / 2).item(), rel=1e-6)


def test_no_extra_points():
    s, r, mask, loc, _, _, neg = _inputs()
    total, m = GAIRLoss()(s, r, mask, loc, torch.zeros(0, 8), torch.zeros(0, 8), neg)
    assert torch.isfinite(total) and m["secl_extra"].item() == 0
