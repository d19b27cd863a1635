"""The module a trainer wraps: GAIR + objectives + location queue, batch in, loss out.

Shape legend (see docs/contracts.md): B tiles, K observations per tile (padded, mask),
M extra query points per tile, V street-view size, D width, Q queue length.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gair.configs.model import LossConfig, ModelConfig
from gair.losses.contrastive import GAIRLoss
from gair.losses.queue import LocationQueue
from gair.models.gair import GAIR
from gair.models.teachers import Teachers

BATCH_KEYS = ("rs", "sv", "sv_mask", "lonlat", "xy")


class GAIRPretrainModule(nn.Module):
    """``forward(batch) -> (loss, metrics)``; metrics are detached global scalars."""

    def __init__(
        self,
        model_cfg: ModelConfig | None = None,
        loss_cfg: LossConfig | None = None,
        model: GAIR | None = None,
        teachers: Teachers | None = None,
        queue_seed: int = 0,
    ) -> None:
        super().__init__()
        self.model = model if model is not None else GAIR(model_cfg or ModelConfig())
        self.loss = GAIRLoss(loss_cfg or LossConfig())
        self.queue = LocationQueue(self.loss.cfg.queue_size, seed=queue_seed)
        if self.loss.cfg.distill_weight > 0 and teachers is None:
            raise ValueError("loss.distill_weight > 0 needs teachers (see gair.models.teachers)")
        # Not a registered submodule: the teachers stay out of parameters(), state_dict()
        # and therefore out of the optimizer, ZeRO partitioning and checkpoints.
        object.__setattr__(self, "teachers", teachers if self.loss.cfg.distill_weight > 0 else None)

    def _apply(self, fn, recurse: bool = True):
        # .to(device) / .half() reach the unregistered teachers too.
        super()._apply(fn, recurse)
        if self.teachers is not None:
            self.teachers._apply(fn, recurse)
        return self

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        missing = [k for k in BATCH_KEYS if k not in batch]
        if missing:
            raise KeyError(f"batch lacks {missing}; see docs/contracts.md")
        m = self.model
        # The parameters' dtype: fp32, or bf16/fp16 under DeepSpeed's native mixed precision.
        dtype = m.rs_encoder.patch_embed.weight.dtype
        rs, sv, mask_BK = batch["rs"].to(dtype), batch["sv"], batch["sv_mask"].bool()
        B, K = mask_BK.shape
        xy_extra = batch.get("xy_extra")
        M = 0 if xy_extra is None else xy_extra.shape[1]

        tokens_BND = m.rs_tokens(rs)
        xy = batch["xy"].to(dtype) if M == 0 else torch.cat([batch["xy"], xy_extra], dim=1).to(dtype)
        local_BKD = m.query_tokens(tokens_BND, xy)  # (B, K + M, D)
        D = local_BKD.shape[-1]
        r_ND = local_BKD[:, :K].reshape(B * K, D)
        r_extra_ED = local_BKD[:, K:].reshape(B * M, D)

        # Street views: encode only the real observations, scatter back to the padded layout.
        # ``sv_index`` comes from the data plane (found on the host); without it, finding the
        # real ones here waits for the device once.
        mask_N = mask_BK.reshape(-1)
        sv_index = batch.get("sv_index")
        if sv_index is None:
            sv_index = mask_N.nonzero(as_tuple=True)[0]
        sv_valid = sv.reshape(B * K, *sv.shape[2:]).index_select(0, sv_index).to(dtype)
        sv_pooled = m.encode_sv(sv_valid)
        s_ND = sv_pooled.new_zeros(B * K, D).index_put((sv_index,), m.project_sv(sv_pooled))

        # Locations: positives, extra points and the whole queue in one encoder call.
        lonlat_N2 = torch.where(
            mask_N[:, None], batch["lonlat"].reshape(-1, 2), torch.zeros_like(batch["lonlat"].reshape(-1, 2))
        )
        parts = [lonlat_N2.float()]
        if M:
            parts.append(batch["lonlat_extra"].reshape(-1, 2).float())
        parts.append(self.queue.lonlat.float())
        loc = m.encode_location(torch.cat(parts), check=False)
        loc_ND, loc_extra_ED, loc_neg_QD = loc.split([B * K, B * M, self.queue.size])

        # The objectives in fp32 (logits of cosines / tau; a no-op unless the model is 16-bit).
        total, metrics = self.loss(
            s_ND.float(), r_ND.float(), mask_N, loc_ND.float(), r_extra_ED.float(), loc_extra_ED.float(),
            loc_neg_QD.float(),
        )  # fmt: skip
        if self.teachers is not None:
            total, metrics = self._distill(total, metrics, rs, sv_valid, tokens_BND, sv_pooled)
        if self.training:
            self.queue.enqueue(lonlat_N2, mask_N)
        return total, metrics

    def _distill(self, total, metrics, rs, sv_valid, tokens_BND, sv_pooled):
        """Minus weight * cosine to the frozen teachers: SV pooler output, and RS mean token."""
        t_rs, t_sv = self.teachers.targets(rs, sv_valid)
        cos_rs = F.cosine_similarity(tokens_BND.mean(1), t_rs, dim=-1).mean()
        cos_sv = F.cosine_similarity(sv_pooled, t_sv, dim=-1).mean() if sv_valid.shape[0] else cos_rs.new_zeros(())
        w = self.loss.cfg.distill_weight
        metrics = {**metrics, "distill_rs": (-w * cos_rs).detach(), "distill_sv": (-w * cos_sv).detach()}
        metrics["loss"] = metrics["loss"] + metrics["distill_rs"] + metrics["distill_sv"]
        return total - w * (cos_rs + cos_sv), metrics
