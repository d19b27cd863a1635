"""Fixtures of the serving tests: a tiny export, synthetic tiles and street views as files,
and reference embeddings computed along the training decode path (``decode_row``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from gair.configs.data import DataConfig
from gair.data import decode, storage, transforms
from gair.data.synthetic import write_synthetic
from gair.hub import load_preprocessing, load_pretrained
from tests.eval.conftest import export_tiny


@pytest.fixture(scope="session")
def serving_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny GAIR (gair.hub format), with SV statistics in config.json."""
    import json

    path = export_tiny(tmp_path_factory.mktemp("serving-export") / "export", seed=11)
    meta = json.loads((path / "config.json").read_text())
    meta["preprocessing"] = {"sv_mean": [0.4, 0.45, 0.5], "sv_std": [0.2, 0.25, 0.3]}  # not the defaults
    (path / "config.json").write_text(json.dumps(meta))
    return path


@pytest.fixture(scope="session")
def synthetic_files(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two tiles (one UTM, one EPSG:4326) with 3 street views each, as GeoTIFF/JPEG files + a manifest."""
    root = tmp_path_factory.mktemp("serving-data")
    manifest = write_synthetic(str(root), tiles=2, obs_per_tile=3, seed=5, inline=False, tile_size=40, sv_size=48)
    rows = []
    for f in storage.list_parquet(manifest):
        rows.extend(pq.read_table(f).to_pylist())
    return {"root": root, "manifest": manifest, "rows": rows}


def reference_embeddings(export: Path, rows: list[dict]) -> dict[str, dict[str, np.ndarray]]:
    """Per observation id: embeddings computed the way training feeds the model.

    ``decode_row`` without augmentation gives the RS tile, street views and query points
    exactly as the training loader does; the model is applied with its own methods.
    """
    model = load_pretrained(export)
    cfg = model.cfg
    pre = {"sv_mean": DataConfig().sv_mean, "sv_std": DataConfig().sv_std, **load_preprocessing(export)}
    out: dict[str, dict[str, np.ndarray]] = {}
    for row in rows:
        k = len(row["observations"])
        spec = decode.DecodeSpec(tuple(cfg.rs_bands), cfg.rs_image_size, cfg.sv_image_size, k, 0)
        d = decode.decode_row(row, spec)
        with torch.no_grad():
            rs = torch.from_numpy(d["rs"])[None]
            tokens = model.rs_tokens(rs)
            local = model.query_tokens(tokens, torch.from_numpy(d["xy"])[None].float(), "nili")[0]
            mask = torch.from_numpy(d["sv_mask"])[None]
            sv = transforms.normalize_sv(torch.from_numpy(d["sv"])[None], mask, pre["sv_mean"], pre["sv_std"])[0]
            pooled = model.encode_sv(sv)
            projected = model.project_sv(pooled)
            loc = model.encode_location(torch.from_numpy(d["lonlat"]).double().float())
        for j, o in enumerate(row["observations"]):
            out[o["obs_id"]] = {
                "lonlat": np.array([o["lon"], o["lat"]]),
                "tile_id": row["tile_id"],
                "rs_uri": row["rs_uri"],
                "sv_uri": o["sv_uri"],
                "location_embedding": loc[j].numpy(),
                "rs_embedding": local[j].numpy(),
                "rs_global_embedding": tokens.mean(1)[0].numpy(),
                "sv_embedding": pooled[j].numpy(),
                "sv_projected": projected[j].numpy(),
            }
    return out
