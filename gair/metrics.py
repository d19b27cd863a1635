"""Retrieval metrics from similarities: ranks, recall@k, median rank. Pure numpy.

Shapes: Q queries, N candidates, D embedding width. Query ``i`` has exactly one correct
candidate, ``targets[i]`` (by default candidate ``i``). Ranks are 1-based and
*pessimistic*: a candidate that ties with the correct one counts as ranked above it, so
a degenerate model (all similarities equal) gets the worst rank, never the best.

Used by the evaluation job (``gair.eval.retrieval``) and by validation during training
(``gair.train.validation``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_KS = (1, 5, 10)


def l2_normalize(x_ND: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32); zero rows stay zero."""
    x = np.asarray(x_ND, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def ranks_from_similarity(sim_QN: np.ndarray, targets_Q: np.ndarray | None = None) -> np.ndarray:
    """1-based rank of each query's correct candidate in a (Q, N) similarity matrix."""
    sim = np.asarray(sim_QN)
    if sim.ndim != 2:
        raise ValueError(f"similarity must be (queries, candidates), got shape {sim.shape}")
    q, n = sim.shape
    targets = np.arange(q) if targets_Q is None else np.asarray(targets_Q, dtype=np.int64)
    if targets.shape != (q,):
        raise ValueError(f"targets must have shape ({q},), got {targets.shape}")
    if q and (targets.min() < 0 or targets.max() >= n):
        raise ValueError(f"targets must index the {n} candidates")
    correct = sim[np.arange(q), targets][:, None]
    nan = ~np.isfinite(correct[:, 0])
    # Pessimistic ties: every other candidate with sim >= correct ranks above it.
    above = (sim >= correct).sum(axis=1) - 1
    ranks = above + 1
    ranks[nan] = n  # a NaN similarity is a failed query: worst rank
    return ranks.astype(np.int64)


def retrieval_ranks(
    queries_QD: np.ndarray,
    candidates_ND: np.ndarray,
    targets_Q: np.ndarray | None = None,
    *,
    normalize: bool = True,
    chunk: int = 4096,
) -> np.ndarray:
    """Ranks by cosine (``normalize``) or dot-product similarity, computed ``chunk`` queries at a time.

    Memory is O(chunk x N), so a 100k x 100k retrieval never builds the full matrix.
    """
    queries = np.asarray(queries_QD, dtype=np.float32)
    candidates = np.asarray(candidates_ND, dtype=np.float32)
    if queries.ndim != 2 or candidates.ndim != 2 or queries.shape[1] != candidates.shape[1]:
        raise ValueError(f"queries {queries.shape} and candidates {candidates.shape} must be (Q, D) and (N, D)")
    if len(candidates) == 0:
        raise ValueError("no candidates to retrieve from")
    if normalize:
        queries, candidates = l2_normalize(queries), l2_normalize(candidates)
    q = len(queries)
    targets = np.arange(q) if targets_Q is None else np.asarray(targets_Q, dtype=np.int64)
    out = np.empty(q, dtype=np.int64)
    for start in range(0, q, chunk):
        stop = min(q, start + chunk)
        sim = queries[start:stop] @ candidates.T
        out[start:stop] = ranks_from_similarity(sim, targets[start:stop])
    return out


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    """Fraction of queries whose correct candidate is in the top ``k``."""
    ranks = np.asarray(ranks)
    return float((ranks <= k).mean()) if ranks.size else float("nan")


def median_rank(ranks: np.ndarray) -> float:
    ranks = np.asarray(ranks)
    return float(np.median(ranks)) if ranks.size else float("nan")


def summarize_ranks(ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """``{"recall@1": ..., "recall@5": ..., "recall@10": ..., "median_rank": ..., "mean_rank": ...}``."""
    ranks = np.asarray(ranks)
    out = {f"recall@{k}": recall_at_k(ranks, k) for k in ks}
    out["median_rank"] = median_rank(ranks)
    out["mean_rank"] = float(ranks.mean()) if ranks.size else float("nan")
    return out


def retrieval_metrics(
    sim_QN: np.ndarray, targets_Q: np.ndarray | None = None, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """Recall@k and median rank straight from a similarity matrix."""
    return summarize_ranks(ranks_from_similarity(sim_QN, targets_Q), ks)


def chance_metrics(n_candidates: int, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """What a random ranking scores in expectation: recall@k = k/N, median rank (N+1)/2."""
    if n_candidates < 1:
        raise ValueError("n_candidates must be >= 1")
    out = {f"recall@{k}": min(1.0, k / n_candidates) for k in ks}
    out["median_rank"] = (n_candidates + 1) / 2
    out["mean_rank"] = (n_candidates + 1) / 2
    return out
