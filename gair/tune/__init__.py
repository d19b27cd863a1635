"""Hyperparameter sweeps over pretraining with Ray Tune (``jobs/tune.py``).

- ``space``: the search space (``gair.configs.tune.SpaceConfig``) -> Tune's param_space,
  and a trial's values -> ``PretrainConfig`` overrides.
- ``trial``: the per-trial driver function (builds and fits the ``TorchTrainer``).
- ``sweep``: the Tuner (searcher, ASHA, concurrency), resume, and the sweep's outputs.
- ``report``: results table, best config YAML, plots.

The MLflow parent run and the trials' child runs are ``gair.tracking.sweep``. The sweep
and trial modules import Ray at the top (they run only with Ray); MLflow is imported
inside ``gair.tracking`` when a run is logged.
"""

from gair.tune.sweep import SweepResult, run_sweep

__all__ = ["SweepResult", "run_sweep"]
