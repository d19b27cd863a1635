"""Evaluation of exported GAIR models: retrieval, location regression and probes, logged to MLflow.

- ``metrics``: recall@k / median rank from similarities (pure numpy, reusable in sweeps);
- ``model_uri``: models:/ runs:/ and local URIs -> a local export directory;
- ``extract``: parallel embedding extraction with Ray Data (actor pool holding the model);
- ``retrieval``, ``location``, ``image_probes`` (+ ``probes``): the tasks;
- ``report``, ``plots``, ``tracking``, ``runner``: the report, its figures, MLflow, the driver.

Only ``metrics`` is imported here; the others import Ray/MLflow/sklearn and are imported
explicitly (``from gair.eval.runner import run_evaluation``).
"""

from gair.eval.metrics import chance_metrics, recall_at_k, retrieval_metrics, retrieval_ranks, summarize_ranks

__all__ = ["chance_metrics", "recall_at_k", "retrieval_metrics", "retrieval_ranks", "summarize_ranks"]
