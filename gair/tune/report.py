"""A finished sweep's outputs: the results table, the best config, plots of the metric.

- ``results.csv`` / ``results.md``: one row per trial: its status (``completed``,
  ``stopped_early`` by ASHA, ``error``), the optimizer steps it ran, its swept values,
  the sweep metric at its last report and at its best report, and the validation metrics.
- ``best_config.yaml``: the base pretraining config with the best trial's values, ready
  for ``python jobs/pretrain.py --config best_config.yaml``.
- ``<metric>_vs_<key>.png`` for each swept key, and ``curves.png`` (metric vs step).

The best trial is the best by its last reported metric among the trials that ran to
``asha.max_t``; early-stopped trials only count when none did (their metric is from fewer
steps, which usually flatters no one, but is not comparable).
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gair.configs import apply_overrides, from_dict, to_dict
from gair.configs.train import PretrainConfig
from gair.tune.space import trial_overrides

VAL_COLUMNS = ("val_loss", "val_recall_at_1", "val_recall_at_5", "val_median_rank")


@dataclass
class TrialRow:
    trial_id: str
    status: str  # completed | stopped_early | error
    steps: int
    params: dict[str, Any]
    last: dict[str, float]
    best: float
    history: list[tuple[int, float]] = field(default_factory=list)  # (step, metric)
    error: str = ""
    mlflow_run_id: str = ""


def rows_from_results(result_grid: Any, metric: str, mode: str, max_t: int) -> list[TrialRow]:
    """One TrialRow per trial of a Tune ResultGrid."""
    rows = []
    for result in result_grid:
        config = result.config or {}
        metrics = {k: float(v) for k, v in (result.metrics or {}).items() if _is_number(v)}
        history = _history(result, metric)
        steps = int(metrics.get("step", history[-1][0] if history else 0))
        if result.error is not None:
            status = "error"
        elif steps < max_t:
            status = "stopped_early"
        else:
            status = "completed"
        values = [v for _, v in history]
        best = (max(values) if mode == "max" else min(values)) if values else math.nan
        trial_id = (result.metrics or {}).get("trial_id") or Path(result.path).name
        rows.append(
            TrialRow(
                trial_id=str(trial_id),
                status=status,
                steps=steps,
                params=dict(config),
                last=metrics,
                best=best,
                history=history,
                error=str(result.error).splitlines()[0][:200] if result.error is not None else "",
            )
        )
    return sorted(rows, key=lambda r: r.trial_id)


def _history(result: Any, metric: str) -> list[tuple[int, float]]:
    df = result.metrics_dataframe
    if df is None or metric not in df.columns or "step" not in df.columns:
        return []
    df = df[["step", metric]].dropna()
    return [(int(s), float(v)) for s, v in zip(df["step"], df[metric], strict=True)]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def best_row(rows: list[TrialRow], metric: str, mode: str) -> TrialRow | None:
    """Best by last metric among completed trials (else among all with the metric)."""

    def score(r: TrialRow) -> float:
        return r.last[metric] if mode == "max" else -r.last[metric]

    usable = [r for r in rows if r.status != "error" and metric in r.last and not math.isnan(r.last[metric])]
    completed = [r for r in usable if r.status == "completed"]
    pool = completed or usable
    return max(pool, key=score) if pool else None


def table(rows: list[TrialRow], metric: str, keys: list[str]) -> tuple[list[str], list[list[str]]]:
    header = ["trial_id", "status", "steps", *keys, f"{metric} (last)", f"{metric} (best)"]
    header += [c for c in VAL_COLUMNS if c != metric]
    header += ["mlflow_run_id", "error"]
    body = []
    for r in rows:
        cells = [r.trial_id, r.status, str(r.steps)]
        cells += [_fmt(r.params.get(k)) for k in keys]
        cells += [_fmt(r.last.get(metric)), _fmt(r.best)]
        cells += [_fmt(r.last.get(c)) for c in VAL_COLUMNS if c != metric]
        cells += [r.mlflow_run_id, r.error]
        body.append(cells)
    return header, body


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def format_table(header: list[str], body: list[list[str]]) -> str:
    """Aligned plain-text table (what the job prints)."""
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in body]
    return "\n".join(line.rstrip() for line in lines)


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def best_config(base_user: dict[str, Any], best: TrialRow, sweep_name: str) -> PretrainConfig:
    """The user's base config with the best trial's values, named ``<sweep>-best``."""
    data = apply_overrides(
        dict(base_user), PretrainConfig, [*trial_overrides(best.params), f"run.name={sweep_name}-best"]
    )
    return from_dict(PretrainConfig, data)


def write_best_config(cfg: PretrainConfig, best: TrialRow, metric: str, path: Path) -> Path:
    head = (
        f"# Best trial {best.trial_id} of the sweep: {metric}={_fmt(best.last.get(metric))} at step {best.steps}.\n"
        f"# Its values: {', '.join(f'{k}={v}' for k, v in sorted(best.params.items()))}\n"
        f"#   python jobs/pretrain.py --config {path.name}\n"
    )
    path.write_text(head + yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path


def write_outputs(
    rows: list[TrialRow],
    *,
    metric: str,
    mode: str,
    keys: list[str],
    log_keys: set[str],
    base_user: dict[str, Any],
    sweep_name: str,
    out_dir: Path,
) -> tuple[list[Path], TrialRow | None, str]:
    """Write the table, the best config and the plots to ``out_dir``; returns (files, best, printed table)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    header, body = table(rows, metric, keys)
    files = [out_dir / "results.csv", out_dir / "results.md"]
    with files[0].open("w", newline="") as f:
        csv.writer(f).writerows([header, *body])
    files[1].write_text(markdown_table(header, body))
    best = best_row(rows, metric, mode)
    if best is not None:
        files.append(
            write_best_config(best_config(base_user, best, sweep_name), best, metric, out_dir / "best_config.yaml")
        )
    files += plot_metric_vs_values(rows, metric, keys, log_keys, out_dir)
    files.append(plot_curves(rows, metric, out_dir / "curves.png"))
    return files, best, format_table(header, body)


_MARKERS = {"completed": "o", "stopped_early": "x", "error": "s"}


def plot_metric_vs_values(
    rows: list[TrialRow], metric: str, keys: list[str], log_keys: set[str], out_dir: Path
) -> list[Path]:
    """One scatter per swept key: the metric (last report) against the trial's value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for key in keys:
        points = [(r.params.get(key), r.last.get(metric), r.status) for r in rows if metric in r.last]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        numeric = all(_is_number(x) for x, _, _ in points)
        labels = sorted({str(x) for x, _, _ in points}) if not numeric else []
        for status, marker in _MARKERS.items():
            pts = [(x, y) for x, y, s in points if s == status]
            if pts:
                xs = [x if numeric else labels.index(str(x)) for x, _ in pts]
                ax.scatter(xs, [y for _, y in pts], marker=marker, label=status.replace("_", " "))
        if numeric and key in log_keys and all(x > 0 for x, _, _ in points):
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(range(len(labels)), labels)
        ax.set_xlabel(key)
        ax.set_ylabel(f"{metric} (last report)")
        ax.grid(alpha=0.3)
        if points:
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / f"{_safe(metric)}_vs_{_safe(key)}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_curves(rows: list[TrialRow], metric: str, path: Path) -> Path:
    """The metric against the optimizer step, one line per trial (early stops end early)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        if r.history:
            steps, values = zip(*r.history, strict=True)
            ax.plot(steps, values, marker=_MARKERS.get(r.status, "o"), label=r.trial_id)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    if any(r.history for r in rows):
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _safe(text: str) -> str:
    return re.sub(r"[^\w.-]", "_", text)
