"""Pretrain GAIR with Ray Train + DeepSpeed ZeRO, checkpoints on object storage, MLflow.

Examples:
    python jobs/pretrain.py --config configs/pretrain_smoke.yaml
    python jobs/pretrain.py --config configs/pretrain_gpu.yaml --set run.name=gair-base-v1 \\
        --set data.train_manifest=s3://bucket/manifest --set run.storage_path=s3://bucket/runs
    RAY_AUTH_MODE=token ray job submit --working-dir . -- \\
        python jobs/pretrain.py --config configs/pretrain_smoke.yaml

Rerunning with the same run.name (and run.storage_path) resumes from its newest checkpoint
that verifies; rerunning a run that finished at train.max_steps changes nothing (unless
run.reexport=true).

Exit codes: 0 done (or already finished); 2 unusable input, found before Ray starts or an
MLflow run opens (config, manifest, storage path, workers that do not fit the cluster);
1 training failed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gair.cli import config_parser, connect_ray  # noqa: E402
from gair.configs import ConfigError, load_config  # noqa: E402
from gair.configs.train import PretrainConfig  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = config_parser(__doc__, PretrainConfig, "configs/pretrain_smoke.yaml")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(PretrainConfig, args.config, args.set)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    from gair.train import preflight
    from gair.train.trainer import finished_result, resolve_paths, run_pretraining

    cfg = resolve_paths(cfg)
    try:
        preflight.check_inputs(cfg)
        if finished_result(cfg) is None:
            connect_ray()
            import ray

            preflight.check_resources(cfg, ray.cluster_resources())
    except preflight.PreflightError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        run_pretraining(cfg)
    except Exception as exc:
        from gair.train.errors import non_retryable_reason

        reason = non_retryable_reason(exc)
        if reason is None:
            raise
        print(f"error: training stopped (a retry cannot fix this): {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
