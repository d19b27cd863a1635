"""GAIR objectives: INCL (street view <-> NILI feature) and SECL (<-> location, queue negatives).

Shape legend: N street-view observations on this worker (padded, with a validity mask),
E extra query points on this worker, Q queue entries, D width, W workers.

Negatives span all workers: features are gathered with gradient and each worker computes
the loss for its own rows against every column (OpenCLIP's local-loss + gather-with-grad).
Each worker returns ``W * (sum of its row losses) / (rows on all workers)``; since data
parallelism averages gradients over workers, training then follows exactly the gradient
of the single-process loss over the global batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gair.configs.model import LossConfig
from gair.losses.distributed import all_reduce_sum, gather_no_grad, gather_with_grad, world

TERMS = ("incl_sv_rs", "incl_rs_sv", "secl_sv", "secl_rs", "secl_extra")


class GAIRLoss(nn.Module):
    """Total = incl_w * (INCL_s->r + INCL_r->s) / 2 + secl_w * (SECL_s + SECL_r) / 2 + extra_w * SECL_extra."""

    def __init__(self, cfg: LossConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or LossConfig()
        init = torch.full([1], math.log(1.0 / self.cfg.temperature))
        # Shape [1], not 0-dim: DeepSpeed cannot flatten 0-dim parameters.
        if self.cfg.learnable_temperature:
            self.logit_scale = nn.Parameter(init)
        else:
            self.register_buffer("logit_scale", init)

    def scale(self) -> torch.Tensor:
        """exp(logit_scale) = 1 / tau, clamped as in CLIP."""
        return self.logit_scale.exp().clamp(max=self.cfg.max_logit_scale)

    def forward(
        self,
        s_ND: torch.Tensor,
        r_ND: torch.Tensor,
        mask_N: torch.Tensor,
        loc_ND: torch.Tensor,
        r_extra_ED: torch.Tensor,
        loc_extra_ED: torch.Tensor,
        loc_neg_QD: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return (loss for backward on this worker, detached global value of every term)."""
        rank, size = world()
        gather = self.cfg.gather_negatives and size > 1
        scale = self.scale()
        s, r, loc = F.normalize(s_ND, dim=-1), F.normalize(r_ND, dim=-1), F.normalize(loc_ND, dim=-1)
        r_extra, loc_extra = F.normalize(r_extra_ED, dim=-1), F.normalize(loc_extra_ED, dim=-1)
        loc_neg = F.normalize(loc_neg_QD, dim=-1)
        mask = mask_N.bool()
        N = s.shape[0]

        # INCL: in-batch negatives, columns from every worker.
        if gather:
            s_all, r_all, mask_all = gather_with_grad(s), gather_with_grad(r), gather_no_grad(mask)
            offset = rank * N
        else:
            s_all, r_all, mask_all, offset = s, r, mask, 0
        labels = torch.arange(N, device=s.device) + offset
        col_bias = torch.zeros(mask_all.shape, dtype=s.dtype, device=s.device).masked_fill(~mask_all, float("-inf"))
        ce_sr = F.cross_entropy(scale * s @ r_all.T + col_bias, labels, reduction="none")
        ce_rs = F.cross_entropy(scale * r @ s_all.T + col_bias, labels, reduction="none")
        zero = s.new_zeros(())
        sums = {
            "incl_sv_rs": torch.where(mask, ce_sr, zero).sum(),
            "incl_rs_sv": torch.where(mask, ce_rs, zero).sum(),
            # SECL: positive = own location, negatives = the queue (same on every worker).
            "secl_sv": torch.where(mask, _infonce(s, loc, loc_neg, scale), zero).sum(),
            "secl_rs": torch.where(mask, _infonce(r, loc, loc_neg, scale), zero).sum(),
            "secl_extra": _infonce(r_extra, loc_extra, loc_neg, scale).sum() if r_extra.shape[0] else zero,
        }
        counts = torch.stack([mask.sum(), torch.tensor(r_extra.shape[0], device=s.device)]).to(s.dtype)
        stats = all_reduce_sum(torch.cat([counts, torch.stack([v.detach() for v in sums.values()])]))
        n_obs, n_extra = stats[0].clamp(min=1), stats[1].clamp(min=1)
        denom = {k: (n_extra if k == "secl_extra" else n_obs) for k in sums}
        # Per-worker share of the global mean, scaled by W to undo the gradient averaging.
        terms = {k: v * size / denom[k] for k, v in sums.items()}
        global_terms = {k: stats[2 + i] / denom[k] for i, k in enumerate(sums)}
        c = self.cfg
        total = (
            c.incl_weight * (terms["incl_sv_rs"] + terms["incl_rs_sv"]) / 2
            + c.secl_weight * (terms["secl_sv"] + terms["secl_rs"]) / 2
            + c.extra_points_weight * terms["secl_extra"]
        )
        metrics = {
            **global_terms,
            "loss": (
                c.incl_weight * (global_terms["incl_sv_rs"] + global_terms["incl_rs_sv"]) / 2
                + c.secl_weight * (global_terms["secl_sv"] + global_terms["secl_rs"]) / 2
                + c.extra_points_weight * global_terms["secl_extra"]
            ),
            "temperature": (1.0 / scale.detach()).reshape(()),
            "observations": stats[0],
        }
        return total, metrics


def _infonce(q_ND: torch.Tensor, pos_ND: torch.Tensor, neg_QD: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """MoCo-style InfoNCE per row: logits [q.pos, q.neg^T] * scale, label 0. Returns (N,)."""
    l_pos = (q_ND * pos_ND).sum(-1, keepdim=True)  # (N, 1)
    l_neg = q_ND @ neg_QD.T  # (N, Q)
    logits = torch.cat([l_pos, l_neg], dim=1) * scale
    return F.cross_entropy(logits, torch.zeros(q_ND.shape[0], dtype=torch.long, device=q_ND.device), reduction="none")
