"""Localized RS -> SV retrieval on a held-out manifest.

Candidates are the (projected) SV embeddings of every observation of the manifest; the
query of observation ``i`` is the RS feature read at its location inside its tile (NILI,
bilinear or bicubic sampling of the token grid) or the tile's global embedding. The
correct answer of query ``i`` is candidate ``i``. Chance: recall@k = k/N.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from gair import metrics
from gair.configs.eval import EvalConfig
from gair.data import decode, schema, storage
from gair.eval import extract


class EmptyManifestError(ValueError):
    """A manifest with no tiles, or no usable observations."""


@dataclass
class RetrievalResult:
    metrics: dict[str, dict[str, float]]  # mode -> recall@k, median_rank, mean_rank
    chance: dict[str, float]
    n_queries: int
    n_tiles: int
    bad_tiles: dict[str, int]  # reason -> count
    ranks: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    examples: list[dict[str, Any]] = field(repr=False, default_factory=list)


def manifest_row_count(uri: str, s3: storage.S3Options | None = None) -> int:
    """Tiles in a manifest, from the Parquet footers; raises for a missing or empty manifest."""
    import pyarrow.parquet as pq

    try:
        files = storage.list_parquet(uri, s3)
    except FileNotFoundError as exc:
        raise EmptyManifestError(f"manifest {uri} does not exist") from exc
    if not files:
        raise EmptyManifestError(f"manifest {uri} holds no .parquet files")
    fs, _ = storage.resolve(uri, s3)
    total = 0
    for path in files:
        with fs.open_input_file(path) as f:
            pf = pq.ParquetFile(f)
            schema.check_schema(pf.schema_arrow)
            total += pf.metadata.num_rows
    if total == 0:
        raise EmptyManifestError(f"manifest {uri} has no tiles ({len(files)} Parquet file(s), 0 rows)")
    return total


def decode_spec(cfg: EvalConfig, model_cfg: Any) -> decode.DecodeSpec:
    """Deterministic decoding: no augmentation, the first ``max_obs_per_tile`` observations."""
    return decode.DecodeSpec(
        bands=tuple(model_cfg.rs_bands),
        rs_size=model_cfg.rs_image_size,
        sv_size=model_cfg.sv_image_size,
        obs_per_tile=cfg.retrieval.max_obs_per_tile,
        extra_points=0,
        augment=False,
        seed=cfg.seed,
        s3=storage.S3Options.from_config(cfg.extract).resolved(),
    )


def extract_manifest(
    payload_ref: Any, cfg: EvalConfig, model_cfg: Any, *, stream: TextIO | None = sys.stderr
) -> tuple[dict[str, np.ndarray], int]:
    """Per-observation embeddings of the retrieval manifest, and its number of tiles."""
    import ray.data

    uri = cfg.retrieval.manifest
    s3 = storage.S3Options.from_config(cfg.extract)
    n_tiles = manifest_row_count(uri, s3)
    if cfg.retrieval.max_tiles:
        n_tiles = min(n_tiles, cfg.retrieval.max_tiles)
    extract.quiet_data_context()
    fs, path = storage.resolve(uri, s3)
    ds = ray.data.read_parquet(path, filesystem=fs, columns=list(schema.COLUMNS), file_extensions=["parquet"])
    if cfg.retrieval.max_tiles:
        ds = ds.limit(cfg.retrieval.max_tiles)
    kwargs = {
        "payload": {"ref": payload_ref},
        "spec": decode_spec(cfg, model_cfg),
        "modes": tuple(cfg.retrieval.modes),
        "sv_mean": extract.sv_statistics(cfg.extract)[0],
        "sv_std": extract.sv_statistics(cfg.extract)[1],
    }
    ds = extract.map_with_model(ds, extract.ManifestEmbedder, kwargs, cfg.extract, batch_format="pyarrow")
    out = extract.collect(
        ds,
        what="retrieval tiles",
        total=n_tiles,
        count_key="tile_id",
        every_s=cfg.extract.progress_every_s,
        stream=stream,
    )
    return out, n_tiles


def evaluate_retrieval(
    emb: dict[str, np.ndarray], n_tiles: int, cfg: EvalConfig, *, manifest_uri: str = ""
) -> RetrievalResult:
    """Metrics of every mode from the extracted embeddings (see :func:`extract_manifest`)."""
    rcfg = cfg.retrieval
    if not emb:  # every tile decoded fine but none has an observation
        raise EmptyManifestError(
            f"manifest {manifest_uri} has no usable street-view observations (its {n_tiles} tiles have none)"
        )
    ok = emb["ok"].astype(bool)
    bad: dict[str, int] = {}
    for reason in emb["bad_reason"][~ok]:
        code = str(reason).split(":", 1)[0]
        bad[code] = bad.get(code, 0) + 1
    good = {k: v[ok] for k, v in emb.items()}
    n = int(ok.sum())
    if n == 0:
        detail = f" ({sum(bad.values())} unusable tiles: {bad})" if bad else " (its tiles have no observations)"
        raise EmptyManifestError(f"manifest {manifest_uri} has no usable street-view observations{detail}")
    # Stable order (the actors may return blocks in any order): by tile, then observation.
    order = np.lexsort((good["obs_index"], good["tile_id"].astype(str)))
    good = {k: v[order] for k, v in good.items()}
    results, ranks = {}, {}
    for mode in rcfg.modes:
        ranks[mode] = metrics.retrieval_ranks(good[f"q_{mode}"], good["sv"])
        results[mode] = metrics.summarize_ranks(ranks[mode], rcfg.ks)
    examples = pick_examples(good, rcfg.modes[0], rcfg.examples, rcfg.top_k_shown, cfg.seed)
    return RetrievalResult(
        results, metrics.chance_metrics(n, rcfg.ks), n, len(set(good["tile_id"].tolist())), bad, ranks, examples
    )


def pick_examples(good: dict[str, np.ndarray], mode: str, count: int, top_k: int, seed: int) -> list[dict[str, Any]]:
    """``count`` random queries with their top-``top_k`` candidates under ``mode``."""
    n = len(good["sv"])
    if count == 0 or n == 0:
        return []
    rng = np.random.default_rng(seed)
    picks = rng.choice(n, size=min(count, n), replace=False)
    q = metrics.l2_normalize(good[f"q_{mode}"][picks])
    c = metrics.l2_normalize(good["sv"])
    sim = q @ c.T
    out = []
    for row, i in enumerate(picks):
        top = np.argsort(-sim[row], kind="stable")[:top_k]
        rank = int(metrics.ranks_from_similarity(sim[row : row + 1], np.array([i]))[0])
        out.append(
            {
                "mode": mode,
                "query": _obs_ref(good, i),
                "rank": rank,
                "retrieved": [{**_obs_ref(good, j), "sim": float(sim[row, j]), "correct": bool(j == i)} for j in top],
            }
        )
    return out


def _obs_ref(good: dict[str, np.ndarray], i: int) -> dict[str, Any]:
    return {
        "tile_id": str(good["tile_id"][i]),
        "obs_index": int(good["obs_index"][i]),
        "obs_id": str(good["obs_id"][i]),
        "xy": good["xy"][i].tolist(),
        "label": str(good["label"][i]),
    }


def load_example_images(
    manifest_uri: str, examples: list[dict[str, Any]], cfg: EvalConfig
) -> dict[tuple[str, int] | str, np.ndarray]:
    """RGB images of the tiles and street views in ``examples``: {tile_id: (H, W, 3), (tile_id, obs_index): (h, w, 3)}.

    Reads only the rows of the needed tiles (a filtered Parquet scan).
    """
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    if not examples:
        return {}
    s3 = storage.S3Options.from_config(cfg.extract).resolved()
    tiles = {e["query"]["tile_id"] for e in examples} | {r["tile_id"] for e in examples for r in e["retrieved"]}
    fs, _ = storage.resolve(manifest_uri, s3)
    dataset = pads.dataset(storage.list_parquet(manifest_uri, s3), filesystem=fs, format="parquet")
    table = dataset.to_table(columns=list(schema.COLUMNS), filter=pc.field("tile_id").isin(sorted(tiles)))
    images: dict[Any, np.ndarray] = {}
    for row in table.to_pylist():
        tid = str(row["tile_id"])
        with contextlib.suppress(decode.BadRowError):
            images[tid] = rs_rgb(decode.decode_rs(row, decode.check_georeference(row), s3), list(row["band_names"]))
        for k, obs in enumerate(row["observations"] or []):
            with contextlib.suppress(decode.BadRowError):
                images[(tid, k)] = decode.decode_sv(obs, s3)
    return images


def rs_rgb(image_CHW: np.ndarray, band_names: list[str]) -> np.ndarray:
    """True-colour (B4, B3, B2) view of a tile, contrast-stretched per band to [0, 1]."""
    picks = [band_names.index(b) for b in ("B4", "B3", "B2") if b in band_names]
    if len(picks) < 3:
        picks = [0, 0, 0] if image_CHW.shape[0] < 3 else [0, 1, 2]
    rgb = image_CHW[picks].astype(np.float32).transpose(1, 2, 0)
    lo, hi = np.percentile(rgb, 2, axis=(0, 1)), np.percentile(rgb, 98, axis=(0, 1))
    return np.clip((rgb - lo) / np.maximum(hi - lo, 1e-6), 0, 1)
