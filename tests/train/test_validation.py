"""gair.train.validation: localized retrieval metrics under MLflow-safe names."""

from __future__ import annotations

import numpy as np
import pytest

from gair.train import validation


def test_localized_retrieval_metrics_names_and_values():
    # Query 0 finds its own candidate first; query 1's own candidate is beaten by candidate 0.
    q = np.array([[1.0, 0.0], [1.0, 0.1]])
    c = np.array([[1.0, 0.0], [0.0, 1.0]])
    out = validation.localized_retrieval_metrics(q, c)
    assert set(out) == {"val_recall_at_1", "val_recall_at_5", "val_median_rank", "val_observations"}
    assert out["val_recall_at_1"] == pytest.approx(0.5) and out["val_recall_at_5"] == 1.0
    assert out["val_median_rank"] == 1.5 and out["val_observations"] == 2.0


def test_gather_rows_is_identity_without_a_process_group():
    x = np.arange(6.0).reshape(3, 2)
    assert validation.gather_rows(x) is x
