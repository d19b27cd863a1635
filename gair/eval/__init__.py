"""Evaluation of exported GAIR models: retrieval, location regression and probes, logged to MLflow.

- ``model_uri``: models:/ runs:/ and local URIs -> a local export directory;
- ``extract``: parallel embedding extraction with Ray Data (actor pool holding the model);
- ``retrieval``, ``location``, ``image_probes`` (+ ``probes``): the tasks;
- ``report``, ``plots``, ``tracking``, ``runner``: the report, its figures, MLflow, the driver.

The retrieval metrics themselves (ranks, recall@k) are :mod:`gair.metrics`, shared with
validation during training. The modules here import Ray/MLflow/sklearn and are imported
explicitly (``from gair.eval.runner import run_evaluation``).
"""
