"""Probes on frozen image embeddings listed in a CSV: RS tiles (global embedding) and street views.

Each is compared with the same probe on simple pixel features: per-band mean and std for
RS tiles, an 8x8 RGB thumbnail for street views (and the majority class for
classification). Embeddings are extracted in parallel with Ray Data.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from gair.configs.eval import EvalConfig
from gair.data import storage
from gair.eval import extract, probes, tables


class ImageLoadError(ValueError):
    """Images listed in a probe CSV that could not be read."""


@dataclass
class ImageProbeResult:
    task: str  # "classification" | "regression"
    n: int
    gair: probes.ProbeResult
    baseline: probes.ProbeResult
    baseline_name: str
    majority: dict[str, float] | None = None
    target: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))


def _extract(
    kind: str, uris: list[str], payload_ref: Any, cfg: EvalConfig, stream: TextIO | None
) -> dict[str, np.ndarray]:
    import ray.data

    extract.quiet_data_context()
    s3 = storage.S3Options.from_config(cfg.extract).resolved()
    ds = ray.data.from_items([{"uri": u, "row": i} for i, u in enumerate(uris)])
    if kind == "rs":
        cls = extract.RSFileEmbedder
        kwargs = {"payload": {"ref": payload_ref}, "band_names": tuple(cfg.rs_probe.band_names), "s3": s3}
    else:
        cls = extract.SVFileEmbedder
        kwargs = {
            "payload": {"ref": payload_ref},
            "sv_mean": extract.sv_statistics(cfg.extract)[0],
            "sv_std": extract.sv_statistics(cfg.extract)[1],
            "s3": s3,
        }
    ds = extract.map_with_model(ds, cls, kwargs, cfg.extract, batch_format="numpy")
    out = extract.collect(
        ds, what=f"{kind} images", total=len(uris), every_s=cfg.extract.progress_every_s, stream=stream
    )
    order = np.argsort(out["row"])
    out = {k: v[order] for k, v in out.items()}
    bad = np.flatnonzero(~out["ok"].astype(bool))
    if len(bad):
        shown = "; ".join(str(out["bad_reason"][i]) for i in bad[:5])
        raise ImageLoadError(f"{kind}_probe: {len(bad)} of {len(uris)} images could not be read: {shown}")
    return out


def evaluate_rs_probe(payload_ref: Any, cfg: EvalConfig, *, stream: TextIO | None = sys.stderr) -> ImageProbeResult:
    pc = cfg.rs_probe
    s3 = storage.S3Options.from_config(cfg.extract)
    df = tables.read_csv(pc.csv, [pc.uri_column, pc.label_column], what="rs_probe", s3=s3)
    df = df.dropna(subset=[pc.uri_column, pc.label_column])
    uris = tables.absolute_uris(df[pc.uri_column].tolist(), pc.csv)
    labels = df[pc.label_column].astype(str).to_numpy()
    out = _extract("rs", uris, payload_ref, cfg, stream)
    return ImageProbeResult(
        "classification",
        len(labels),
        probes.cross_validate_classification(out["emb"], labels, pc.probe),
        probes.cross_validate_classification(out["baseline"], labels, pc.probe),
        "per-band mean/std",
        probes.majority_baseline(labels),
        labels,
    )


def evaluate_sv_probe(payload_ref: Any, cfg: EvalConfig, *, stream: TextIO | None = sys.stderr) -> ImageProbeResult:
    pc = cfg.sv_probe
    s3 = storage.S3Options.from_config(cfg.extract)
    df = tables.read_csv(pc.csv, [pc.uri_column, pc.target_column], what="sv_probe", s3=s3)
    df = df.dropna(subset=[pc.uri_column, pc.target_column])
    uris = tables.absolute_uris(df[pc.uri_column].tolist(), pc.csv)
    if pc.task == "regression":
        try:
            target = df[pc.target_column].astype(float).to_numpy()
        except (TypeError, ValueError) as exc:
            raise tables.CSVInputError(
                f"sv_probe: column {pc.target_column!r} of {pc.csv} must be numeric for task regression ({exc})"
            ) from exc
    else:
        target = df[pc.target_column].astype(str).to_numpy()
    out = _extract("sv", uris, payload_ref, cfg, stream)
    if pc.task == "regression":
        fit = probes.cross_validate_regression
        majority = None
    else:
        fit = probes.cross_validate_classification
        majority = probes.majority_baseline(target)
    return ImageProbeResult(
        pc.task,
        len(target),
        fit(out["emb"], target, pc.probe),
        fit(out["baseline"], target, pc.probe),
        "8x8 RGB thumbnail",
        majority,
        target,
    )
