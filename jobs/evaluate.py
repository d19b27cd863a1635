"""Evaluate an exported GAIR model: retrieval, location regression, probes; report to MLflow.

Examples:
    python jobs/evaluate.py --model models:/gair@current --config configs/eval.yaml \\
        --set retrieval.manifest=s3://bucket/heldout/manifest
    python jobs/evaluate.py --model runs:/<run_id>/model --config configs/eval_smoke.yaml
    python jobs/evaluate.py --model ./runs/gair-smoke/export --config configs/eval.yaml --set mlflow.enabled=false

--model takes models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/PATH or a local export
directory (model.safetensors + config.json); it overrides the config's `model` key.
Exit codes: 0 done, 2 bad config or bad input (missing model, CSV columns, empty manifest).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gair.cli import config_parser, connect_ray  # noqa: E402
from gair.configs import ConfigError, load_config  # noqa: E402
from gair.configs.eval import EvalConfig  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = config_parser(__doc__, EvalConfig, "configs/eval.yaml")
    p.add_argument("--model", help="model URI (overrides the config's `model`)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = [*args.set, *([f"model={args.model}"] if args.model else [])]
    try:
        cfg = load_config(EvalConfig, args.config, overrides)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    from gair.eval.runner import BAD_INPUT_ERRORS, run_evaluation

    try:
        if cfg.retrieval.enabled or cfg.rs_probe.enabled or cfg.sv_probe.enabled:
            connect_ray(log_to_driver=True)
        outcome = run_evaluation(cfg)
    except BAD_INPUT_ERRORS as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print((outcome.output_dir / "report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
