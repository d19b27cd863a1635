"""gair.metrics: ranks, recall@k and median rank from similarities."""

from __future__ import annotations

import numpy as np
import pytest

from gair import metrics


def test_ranks_of_identity_are_one():
    sim = np.eye(5)
    assert metrics.ranks_from_similarity(sim).tolist() == [1] * 5
    m = metrics.retrieval_metrics(sim)
    assert m["recall@1"] == 1.0 and m["median_rank"] == 1.0


def test_known_ranks_and_recall():
    # Query 0: correct (0.5) beaten by 0.9 -> rank 2; query 1: correct is the best -> 1;
    # query 2: correct is the worst of 3 -> 3.
    sim = np.array([[0.5, 0.9, 0.1], [0.0, 0.8, 0.3], [0.7, 0.6, 0.2]])
    ranks = metrics.ranks_from_similarity(sim)
    assert ranks.tolist() == [2, 1, 3]
    assert metrics.recall_at_k(ranks, 1) == pytest.approx(1 / 3)
    assert metrics.recall_at_k(ranks, 2) == pytest.approx(2 / 3)
    assert metrics.median_rank(ranks) == 2.0


def test_ties_are_pessimistic_and_nan_is_worst():
    sim = np.ones((4, 4))  # a collapsed model: all candidates tie
    assert metrics.ranks_from_similarity(sim).tolist() == [4] * 4
    sim = np.eye(3)
    sim[1, 1] = np.nan
    assert metrics.ranks_from_similarity(sim).tolist() == [1, 3, 1]


def test_explicit_targets():
    sim = np.array([[0.1, 0.9], [0.8, 0.2]])
    assert metrics.ranks_from_similarity(sim, np.array([1, 0])).tolist() == [1, 1]
    with pytest.raises(ValueError, match="targets"):
        metrics.ranks_from_similarity(sim, np.array([0, 2]))


def test_chunked_matches_full_matrix():
    rng = np.random.default_rng(0)
    q, c = rng.normal(size=(50, 8)), rng.normal(size=(50, 8))
    full = metrics.ranks_from_similarity(metrics.l2_normalize(q) @ metrics.l2_normalize(c).T)
    np.testing.assert_array_equal(metrics.retrieval_ranks(q, c, chunk=7), full)


def test_random_embeddings_score_near_chance():
    rng = np.random.default_rng(1)
    n = 400
    ranks = metrics.retrieval_ranks(rng.normal(size=(n, 16)), rng.normal(size=(n, 16)))
    got, chance = metrics.summarize_ranks(ranks), metrics.chance_metrics(n)
    assert abs(got["recall@10"] - chance["recall@10"]) < 0.04
    assert abs(got["median_rank"] - chance["median_rank"]) < 60
    assert chance["recall@1"] == 1 / n and chance["median_rank"] == (n + 1) / 2


def test_bad_shapes():
    with pytest.raises(ValueError, match="must be"):
        metrics.retrieval_ranks(np.zeros((3, 4)), np.zeros((3, 5)))
    with pytest.raises(ValueError, match="no candidates"):
        metrics.retrieval_ranks(np.zeros((3, 4)), np.zeros((0, 4)))
