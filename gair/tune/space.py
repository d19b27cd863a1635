"""The search space: ``SpaceConfig`` -> Ray Tune's ``param_space``, and a trial's sampled
values -> ``PretrainConfig`` overrides.

Tune's param_space is flat, keyed by the dotted pretraining key (``"loss.temperature"``),
so a trial's config *is* its list of overrides. Every value is checked against
``PretrainConfig`` before the sweep starts (an unknown key or a value the config rejects
fails at once, not in trial 7).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from gair.configs import ConfigError, apply_overrides, from_dict
from gair.configs.train import PretrainConfig
from gair.configs.tune import Dimension, SweepConfig


def build_param_space(sweep: SweepConfig) -> dict[str, Any]:
    """``{"loss.temperature": tune.grid_search([...]) | tune.loguniform(...), ...}``."""
    from ray import tune

    space: dict[str, Any] = {}
    for key, dim in sweep.space.dimensions().items():
        if sweep.search.searcher == "grid":
            space[key] = tune.grid_search(list(dim.values))
        elif dim.values:
            space[key] = tune.choice(list(dim.values))
        else:
            space[key] = _range(dim)
    return space


def _range(dim: Dimension) -> Any:
    from ray import tune

    low, high = dim.low, dim.high
    if dim.integer:
        # randint/lograndint exclude the upper bound; the config's range includes it.
        return tune.lograndint(int(low), int(high) + 1) if dim.log else tune.randint(int(low), int(high) + 1)
    return tune.loguniform(low, high) if dim.log else tune.uniform(low, high)


def trial_overrides(trial_config: dict[str, Any]) -> list[str]:
    """A trial's sampled values as ``--set`` overrides (values written as JSON, which is YAML)."""
    return [f"{key}={json.dumps(_plain(value))}" for key, value in sorted(trial_config.items())]


def _plain(value: Any) -> Any:
    """numpy scalars (random and Optuna samples) -> Python scalars."""
    return value.item() if hasattr(value, "item") else value


def apply_trial(base: dict[str, Any], trial_config: dict[str, Any]) -> PretrainConfig:
    """The trial's PretrainConfig: ``base`` (a config dict) with the sampled values set."""
    data = apply_overrides(copy.deepcopy(base), PretrainConfig, trial_overrides(trial_config))
    return from_dict(PretrainConfig, data)


def corner_configs(sweep: SweepConfig) -> list[dict[str, Any]]:
    """One trial config per value (and per end of each range), the others left at the base."""
    out = []
    for key, dim in sweep.space.dimensions().items():
        candidates = list(dim.values) if dim.values else [dim.low, dim.high]
        if dim.integer and not dim.values:
            candidates = [int(c) for c in candidates]
        out.extend({key: v} for v in candidates)
    return out


def check_space(sweep: SweepConfig, base: dict[str, Any]) -> None:
    """Raise ConfigError when a swept key is unknown or one of its values is invalid."""
    for trial in corner_configs(sweep):
        try:
            apply_trial(base, trial)
        except ConfigError as exc:
            raise ConfigError(f"search space: {trial}: {exc}") from exc


def max_value(sweep: SweepConfig, key: str, default: int) -> int:
    """The largest value a dimension can take (e.g. to write enough observations per tile)."""
    dim = sweep.space.dimensions().get(key)
    if dim is None:
        return default
    values = list(dim.values) if dim.values else [dim.high]
    return int(max(float(v) for v in values))
