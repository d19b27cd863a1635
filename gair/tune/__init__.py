"""Hyperparameter sweeps over pretraining with Ray Tune (``jobs/tune.py``).

- ``space``: the search space (``gair.configs.tune.SpaceConfig``) -> Tune's param_space,
  and a trial's values -> ``PretrainConfig`` overrides.
- ``trial``: the per-trial driver function (builds and fits the ``TorchTrainer``).
- ``sweep``: the Tuner (searcher, ASHA, concurrency), resume, and the sweep's outputs.
- ``report``: results table, best config YAML, plots.
- ``tracking``: the MLflow parent run and one child run per trial.

Ray, DeepSpeed and MLflow are imported inside functions.
"""

from gair.tune.sweep import SweepResult, run_sweep

__all__ = ["SweepResult", "run_sweep"]
