"""``run_evaluation(cfg)``: resolve the model, run the enabled tasks, write and log the report.

What ``jobs/evaluate.py`` calls after parsing its config. Output folder
(``report.output_dir``): ``report.md``, ``metrics.json``, ``retrieval_examples.png``,
``location_world_map.png``, ``location_pred_vs_true.png``, ``sv_probe_pred_vs_true.png``;
the same folder is logged to MLflow under artifact path ``eval``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import ray

from gair.configs import to_dict
from gair.configs.data import DataConfig
from gair.configs.eval import EvalConfig
from gair.eval import image_probes, location, plots, report, retrieval
from gair.eval.extract import ModelPayload
from gair.eval.model_uri import ResolvedModel, resolve_model
from gair.hub import load_preprocessing, load_pretrained
from gair.tracking import RunHandle, closing_run, config_params, resolve_tracking_uri
from gair.tracking.evaluation import link_source_run, start_eval_run


@dataclass
class EvalOutcome:
    results: report.EvalResults
    metrics: dict[str, float]
    output_dir: Path
    mlflow_run_id: str | None
    model: ResolvedModel


def run_evaluation(cfg: EvalConfig, *, stream: TextIO | None = sys.stderr) -> EvalOutcome:
    """Evaluate ``cfg.model`` on every enabled task; returns the results and where they went."""
    tracking_uri = resolve_tracking_uri(cfg.mlflow.tracking_uri)
    out_dir = Path(cfg.report.output_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gair-eval-model-") as tmp:
        resolved = resolve_model(cfg.model, tracking_uri, dst_dir=Path(tmp) / "model")
        model = load_pretrained(resolved.local_dir)
        payload = ModelPayload.from_dir(resolved.local_dir)
        fill_preprocessing(cfg, load_preprocessing(resolved.local_dir))
    _log(stream, f"model {cfg.model} -> {model.cfg.size} GAIR (source run {resolved.run_id or '-'})")
    run = start_tracking(cfg, tracking_uri, resolved) if cfg.mlflow.enabled else None
    with closing_run(run):
        results = run_tasks(cfg, model, payload, resolved, stream=stream)
        metrics = report.flat_metrics(results)
        write_outputs(cfg, results, metrics, out_dir)
        if run is not None:
            run.log_metrics(metrics)
            run.log_artifacts(out_dir, "eval")
    if run is not None:
        if resolved.run_id:
            link_source_run(run, resolved.run_id)
        _log(stream, f"logged to MLflow run {run.run_id}")
    _log(stream, f"report: {out_dir / 'report.md'}")
    return EvalOutcome(results, metrics, out_dir, run.run_id if run is not None else None, resolved)


def start_tracking(cfg: EvalConfig, tracking_uri: str, model: ResolvedModel) -> RunHandle:
    """The evaluation run, tagged with (and nested under) the evaluated model's run."""
    name = cfg.mlflow.run_name or "eval-" + (model.registered_name or model.run_id or Path(model.local_dir).name)
    return start_eval_run(
        tracking_uri,
        name,
        experiment=cfg.mlflow.experiment,
        source_run_id=model.run_id,
        source_experiment_id=model.experiment_id,
        nest_under_source=cfg.mlflow.nest_under_source,
        tags={**model.tags(), "gair.eval.tasks": ",".join(cfg.tasks)},
        params=config_params(cfg),
    )


def fill_preprocessing(cfg: EvalConfig, trained_with: dict) -> None:
    """Unset SV statistics take the model's own (its export's config.json), else the data defaults."""
    defaults = DataConfig()
    if not cfg.extract.sv_mean:
        cfg.extract.sv_mean = tuple(trained_with.get("sv_mean", defaults.sv_mean))
    if not cfg.extract.sv_std:
        cfg.extract.sv_std = tuple(trained_with.get("sv_std", defaults.sv_std))


def run_tasks(
    cfg: EvalConfig, model: Any, payload: ModelPayload, resolved: ResolvedModel, *, stream: TextIO | None
) -> report.EvalResults:
    m = model.cfg
    desc = (
        f"GAIR {m.size} (width {m.width}, depth {m.depth}); RS {len(m.rs_bands)} bands at {m.rs_image_size} px; "
        f"SV {m.sv_image_size} px. Source run: `{resolved.run_id or '-'}`."
    )
    res = report.EvalResults(cfg.model, desc)
    payload_ref = None
    if cfg.retrieval.enabled or cfg.rs_probe.enabled or cfg.sv_probe.enabled:
        payload_ref = ray.put(payload)  # once: every actor of every task reads the same copy
    if cfg.retrieval.enabled:
        start = time.monotonic()
        emb, n_tiles = retrieval.extract_manifest(payload_ref, cfg, m, stream=stream)
        res.retrieval = retrieval.evaluate_retrieval(emb, n_tiles, cfg, manifest_uri=cfg.retrieval.manifest)
        res.retrieval_manifest = cfg.retrieval.manifest
        res.timings["retrieval"] = time.monotonic() - start
        _log(
            stream, "retrieval: " + ", ".join(f"{k} R@1={v['recall@1']:.3f}" for k, v in res.retrieval.metrics.items())
        )
    if cfg.location.enabled:
        start = time.monotonic()
        res.location = location.evaluate_location(model, cfg)
        lc = cfg.location
        res.location_desc = f"`{lc.target_column}` from `{lc.csv}`, {lc.probe.probe} probe, {lc.probe.k_folds}-fold"
        res.timings["location"] = time.monotonic() - start
        _log(
            stream,
            f"location: R2 {res.location.gair.metrics['r2']:.3f} (raw lon/lat {res.location.raw_lonlat.metrics['r2']:.3f})",
        )
    if cfg.rs_probe.enabled:
        start = time.monotonic()
        res.rs_probe = image_probes.evaluate_rs_probe(payload_ref, cfg, stream=stream)
        res.timings["rs_probe"] = time.monotonic() - start
    if cfg.sv_probe.enabled:
        start = time.monotonic()
        res.sv_probe = image_probes.evaluate_sv_probe(payload_ref, cfg, stream=stream)
        res.timings["sv_probe"] = time.monotonic() - start
    if cfg.report.plots:
        res.plots = draw_plots(cfg, model, res, Path(cfg.report.output_dir).resolve())
    return res


def draw_plots(cfg: EvalConfig, model: Any, res: report.EvalResults, out_dir: Path) -> list[Path]:
    out: list[Path] = []
    if res.retrieval and res.retrieval.examples:
        images = retrieval.load_example_images(cfg.retrieval.manifest, res.retrieval.examples, cfg)
        out.append(plots.retrieval_grid(res.retrieval.examples, images, out_dir / "retrieval_examples.png"))
    if res.location:
        grid, shape = location.world_grid(cfg.location.map_resolution_deg)
        rgb = location.pca_rgb(location.embed_locations(model, grid, cfg.location.batch_size)).reshape(*shape, 3)
        out.append(
            plots.world_map(
                rgb,
                res.location.lonlat,
                out_dir / "location_world_map.png",
                "GAIR location embeddings, PCA -> RGB (dots: stations)",
            )
        )
        r = res.location
        series = {
            "GAIR location embedding": (r.target, r.gair.oof_pred, f"R2 {r.gair.metrics['r2']:.3f}"),
            "raw (lon, lat)": (r.target, r.raw_lonlat.oof_pred, f"R2 {r.raw_lonlat.metrics['r2']:.3f}"),
        }
        out.append(plots.predicted_vs_true(series, out_dir / "location_pred_vs_true.png", cfg.location.target_column))
    if res.sv_probe and res.sv_probe.task == "regression":
        r = res.sv_probe
        series = {
            "GAIR SV embedding": (r.target, r.gair.oof_pred, f"R2 {r.gair.metrics['r2']:.3f}"),
            r.baseline_name: (r.target, r.baseline.oof_pred, f"R2 {r.baseline.metrics['r2']:.3f}"),
        }
        out.append(plots.predicted_vs_true(series, out_dir / "sv_probe_pred_vs_true.png", cfg.sv_probe.target_column))
    return out


def write_outputs(cfg: EvalConfig, res: report.EvalResults, metrics: dict[str, float], out_dir: Path) -> None:
    (out_dir / "report.md").write_text(report.markdown(res))
    payload = {"model": cfg.model, "metrics": metrics, "config": to_dict(cfg)}
    if res.retrieval:
        payload["retrieval_examples"] = res.retrieval.examples
        payload["retrieval_bad_tiles"] = res.retrieval.bad_tiles
    (out_dir / "metrics.json").write_text(json.dumps(report.to_jsonable(payload), indent=2))


def _log(stream: TextIO | None, text: str) -> None:
    if stream is not None:
        print(text, file=stream, flush=True)


def _bad_input_errors() -> tuple[type[BaseException], ...]:
    from gair.data.schema import SchemaError
    from gair.eval.image_probes import ImageLoadError
    from gair.eval.model_uri import ModelNotFoundError
    from gair.eval.probes import ProbeInputError
    from gair.eval.retrieval import EmptyManifestError
    from gair.eval.tables import CSVInputError

    return (ModelNotFoundError, EmptyManifestError, CSVInputError, ProbeInputError, ImageLoadError, SchemaError)


# Errors that mean "the inputs are wrong" (the job exits 2 with the message, no traceback).
BAD_INPUT_ERRORS = _bad_input_errors()
