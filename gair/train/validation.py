"""Validation pass on ``data.val_manifest``: contrastive loss and localized retrieval.

Runs inside every Ray Train worker (all ranks must call :func:`run_validation` together:
the loss and the gathers are collectives). Each worker reads its shard of the validation
dataset (built with ``train=False``: no augmentation) and computes, per batch,

- the pretraining objective in eval mode (``val_loss`` and every term as ``val_<term>``;
  the loss already reduces over all workers, so every rank holds the global value); and
- the embeddings of localized retrieval: the NILI feature of the RS tile at each street
  view's location (query) and the projected street-view embedding (candidate).

The embeddings of all workers are gathered and every observation's NILI feature ranks all
street views of the validation set by cosine similarity (``gair.metrics``):
``val_recall_at_1``, ``val_recall_at_5`` and ``val_median_rank``. Unlike the loss, recall
does not depend on the temperature, so it compares runs with different temperatures.

Shape legend: B tiles, K observations per tile, N valid observations, D width.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from gair.configs.train import PretrainConfig
from gair.data.pipeline import iter_training_batches
from gair.distributed import all_true
from gair.metrics import retrieval_ranks, summarize_ranks

RECALL_KS = (1, 5)
PREFIX = "val_"


def run_validation(cfg: PretrainConfig, engine: Any, shard: Any, device: torch.device) -> dict[str, float]:
    """One pass over this worker's validation shard; the same metrics are returned on every rank."""
    module = engine.module
    was_training = module.training
    module.eval()
    data_cfg = dataclasses.replace(cfg.data, shuffle_buffer=0)
    batches = iter_training_batches(shard, data_cfg, cfg.model, device=device)
    sums: dict[str, float] = {}
    n_batches = 0
    queries, candidates = [], []
    try:
        with torch.no_grad():
            while cfg.train.val_batches == 0 or n_batches < cfg.train.val_batches:
                batch = next(batches, None)
                # Same number of forward passes on every worker: the loss holds collectives.
                if not all_true(batch is not None):
                    break
                _, metrics = engine(batch)
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                with _autocast(cfg, device):
                    q_ND, c_ND = localized_embeddings(module.model, batch)
                queries.append(q_ND.float().cpu().numpy())
                candidates.append(c_ND.float().cpu().numpy())
                n_batches += 1
    finally:
        module.train(was_training)
    if n_batches == 0:
        raise RuntimeError(
            f"the validation shard gave no batch of {cfg.data.batch_size} tiles: use a larger validation set "
            "or a smaller data.batch_size"
        )
    out = {f"{PREFIX}{k}": v / n_batches for k, v in sums.items() if k not in ("temperature", "observations")}
    out.update(localized_retrieval_metrics(gather_rows(_concat(queries)), gather_rows(_concat(candidates))))
    return out


def localized_embeddings(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(NILI feature at each real observation's location, its projected street view): (N, D) each."""
    mask_BK = batch["sv_mask"].bool()
    tokens_BND = model.rs_tokens(batch["rs"])
    local_BKD = model.query_tokens(tokens_BND, batch["xy"].to(batch["rs"].dtype))
    sv = batch["sv"][mask_BK]  # (N, 3, V, V)
    return local_BKD[mask_BK], model.project_sv(model.encode_sv(sv))


def localized_retrieval_metrics(queries_ND: np.ndarray, candidates_ND: np.ndarray) -> dict[str, float]:
    """Recall@k and median rank of query i's own candidate i among all candidates (cosine).

    The names are MLflow-safe (``val_recall_at_1``, not ``recall@1``).
    """
    ranks = retrieval_ranks(queries_ND, candidates_ND)
    summary = summarize_ranks(ranks, RECALL_KS)
    out = {f"{PREFIX}recall_at_{k}": summary[f"recall@{k}"] for k in RECALL_KS}
    out[f"{PREFIX}median_rank"] = summary["median_rank"]
    out[f"{PREFIX}observations"] = float(len(ranks))
    return out


def gather_rows(x: np.ndarray) -> np.ndarray:
    """Concatenate every worker's rows (in rank order); the whole array on every rank."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, x)
    return np.concatenate(parts)


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def _autocast(cfg: PretrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast the DeepSpeed engine applies in its forward (see build_deepspeed_config)."""
    if cfg.train.precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if cfg.train.precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
