"""Sweep pretraining hyperparameters with Ray Tune: one multi-worker DeepSpeed run per trial,
ASHA early stopping on a validation metric, MLflow parent/child runs, best config as YAML.

Examples:
    python jobs/tune.py --config configs/tune_smoke.yaml
    python jobs/tune.py --config configs/tune.yaml --set run.name=tau-sweep-v2 \\
        --set run.storage_path=s3://bucket/sweeps --set search.num_samples=32
    RAY_AUTH_MODE=token ray job submit --working-dir . -- \\
        python jobs/tune.py --config configs/tune_smoke.yaml

Rerunning with the same run.name (and storage) resumes the sweep: finished trials are kept,
interrupted ones continue from their latest checkpoint. See docs/tune.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gair.cli import config_parser, connect_ray  # noqa: E402
from gair.configs import ConfigError, load_config  # noqa: E402
from gair.configs.tune import SweepConfig  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = config_parser(__doc__, SweepConfig, "configs/tune_smoke.yaml")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        sweep = load_config(SweepConfig, args.config, args.set)
        from gair.tune.sweep import load_base

        load_base(sweep)  # fail on a bad base config before connecting to the cluster
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    connect_ray()
    from gair.tune import run_sweep
    from gair.tune.sweep import SweepInterrupted

    try:
        result = run_sweep(sweep)
    except SweepInterrupted as exc:
        print(str(exc), file=sys.stderr)
        return 130
    return 0 if result.best is not None else 1


if __name__ == "__main__":
    sys.exit(main())
