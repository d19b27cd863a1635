"""The evaluation report: markdown tables, a flat metrics dict (for MLflow), the plots."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gair.eval.image_probes import ImageProbeResult
from gair.eval.location import LocationResult
from gair.eval.retrieval import RetrievalResult

MODE_NAMES = {
    "nili": "NILI at the SV location",
    "bilinear": "bilinear token sampling",
    "bicubic": "bicubic token sampling",
    "global": "global RS embedding (tile mean)",
}


@dataclass
class EvalResults:
    model_uri: str
    model_desc: str
    retrieval: RetrievalResult | None = None
    retrieval_manifest: str = ""
    location: LocationResult | None = None
    location_desc: str = ""
    rs_probe: ImageProbeResult | None = None
    sv_probe: ImageProbeResult | None = None
    plots: list[Path] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def _pm(metrics: dict[str, float], key: str, fmt: str = ".3f") -> str:
    std = metrics.get(f"{key}_std")
    value = format(metrics[key], fmt)
    return f"{value} ± {format(std, fmt)}" if std is not None else value


def flat_metrics(res: EvalResults) -> dict[str, float]:
    """``retrieval.nili.recall_at_1``-style names (MLflow allows no ``@``)."""
    out: dict[str, float] = {}
    if res.retrieval:
        for mode, m in res.retrieval.metrics.items():
            out.update({f"retrieval.{mode}.{_name(k)}": v for k, v in m.items()})
        out.update({f"retrieval.chance.{_name(k)}": v for k, v in res.retrieval.chance.items()})
        out["retrieval.n_queries"] = float(res.retrieval.n_queries)
    if res.location:
        for name, probe in (("gair", res.location.gair), ("raw_lonlat", res.location.raw_lonlat)):
            out.update({f"location.{name}.{k}": v for k, v in probe.metrics.items()})
    for task, r in (("rs_probe", res.rs_probe), ("sv_probe", res.sv_probe)):
        if r:
            out.update({f"{task}.gair.{k}": v for k, v in r.gair.metrics.items()})
            out.update({f"{task}.baseline.{k}": v for k, v in r.baseline.metrics.items()})
            if r.majority:
                out.update({f"{task}.majority.{k}": v for k, v in r.majority.items()})
    out.update({f"time_s.{k}": v for k, v in res.timings.items()})
    return out


def _name(key: str) -> str:
    return key.replace("@", "_at_")


def markdown(res: EvalResults) -> str:
    lines = [f"# GAIR evaluation: `{res.model_uri}`", "", res.model_desc, ""]
    if res.retrieval:
        lines += _retrieval_md(res.retrieval, res.retrieval_manifest)
    if res.location:
        lines += _location_md(res.location, res.location_desc)
    if res.rs_probe:
        lines += _probe_md("Linear probe on RS tiles (global embedding)", res.rs_probe)
    if res.sv_probe:
        lines += _probe_md("Probe on street views (SV encoder output)", res.sv_probe)
    if res.timings:
        lines += ["## Timings", "", "| step | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in res.timings.items()] + [""]
    return "\n".join(lines)


def _retrieval_md(r: RetrievalResult, manifest: str) -> list[str]:
    ks = [k for k in next(iter(r.metrics.values())) if k.startswith("recall@")]
    head = "| query feature | " + " | ".join(ks) + " | median rank |"
    lines = [
        "## Localized RS -> SV retrieval",
        "",
        f"Held-out manifest `{manifest}`: {r.n_queries} street views in {r.n_tiles} tiles. Query: the RS "
        f"feature at each street view's location; candidates: all {r.n_queries} street-view embeddings.",
        "",
        head,
        "|" + "---|" * (len(ks) + 2),
    ]
    for mode, m in r.metrics.items():
        lines.append(
            f"| {MODE_NAMES.get(mode, mode)} | "
            + " | ".join(f"{m[k]:.3f}" for k in ks)
            + f" | {m['median_rank']:.1f} |"
        )
    c = r.chance
    lines.append("| chance | " + " | ".join(f"{c[k]:.3f}" for k in ks) + f" | {c['median_rank']:.1f} |")
    if r.bad_tiles:
        lines += ["", f"Unusable tiles left out: {r.bad_tiles}"]
    return [*lines, ""]


def _location_md(r: LocationResult, desc: str) -> list[str]:
    return [
        "## Location regression",
        "",
        f"{desc} ({r.n_points} points); out-of-fold scores, mean ± std over folds.",
        "",
        "| features | R^2 | RMSE |",
        "|---|---|---|",
        f"| GAIR location embedding | {_pm(r.gair.metrics, 'r2')} | {_pm(r.gair.metrics, 'rmse')} |",
        f"| raw (lon, lat) | {_pm(r.raw_lonlat.metrics, 'r2')} | {_pm(r.raw_lonlat.metrics, 'rmse')} |",
        "",
    ]


def _probe_md(title: str, r: ImageProbeResult) -> list[str]:
    lines = [f"## {title}", "", f"{r.n} images, {r.task}; out-of-fold scores, mean ± std over folds.", ""]
    if r.task == "classification":
        lines += ["| features | accuracy | macro-F1 |", "|---|---|---|"]
        for name, m in (("GAIR embedding", r.gair.metrics), (r.baseline_name, r.baseline.metrics)):
            lines.append(f"| {name} | {_pm(m, 'accuracy')} | {_pm(m, 'macro_f1')} |")
        if r.majority:
            lines.append(f"| majority class | {r.majority['accuracy']:.3f} | {r.majority['macro_f1']:.3f} |")
    else:
        lines += ["| features | R^2 | RMSE |", "|---|---|---|"]
        for name, m in (("GAIR embedding", r.gair.metrics), (r.baseline_name, r.baseline.metrics)):
            lines.append(f"| {name} | {_pm(m, 'r2')} | {_pm(m, 'rmse')} |")
    return [*lines, ""]


def to_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj
