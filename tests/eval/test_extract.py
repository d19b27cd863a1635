"""gair.eval.extract: the embedding actors, called in-process (no Ray) on small inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from gair.configs import load_config
from gair.configs.eval import EvalConfig
from gair.data import decode, storage, synthetic
from gair.eval import extract, retrieval
from gair.hub import load_pretrained
from gair.sensors import S2_BANDS_12


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    tiles = [synthetic.make_tile(5, i, obs_per_tile=3, tile_size=48, sv_size=32) for i in range(3)]
    return [synthetic.tile_to_row(t) for t in tiles]


def _embedder(tiny_export: Path, modes=("nili", "bilinear", "global"), max_obs: int = 8) -> extract.ManifestEmbedder:
    cfg = load_config(EvalConfig, None, ["retrieval.manifest=x", f"retrieval.max_obs_per_tile={max_obs}"])
    payload = extract.ModelPayload.from_dir(tiny_export)
    spec = retrieval.decode_spec(cfg, load_pretrained(tiny_export).cfg)
    return extract.ManifestEmbedder({"ref": payload}, spec, modes, (0.5,) * 3, (0.5,) * 3)


def test_payload_rebuilds_the_same_model(tiny_export: Path):
    a = extract.ModelPayload.from_dir(tiny_export).build()
    b = load_pretrained(tiny_export)
    x = torch.randn(2, 10, 32, 32)
    torch.testing.assert_close(a.encode_rs(x), b.encode_rs(x), rtol=0, atol=0)


def test_manifest_embedder_one_row_per_observation(tiny_export: Path, rows: list[dict]):
    emb = _embedder(tiny_export)
    out = emb(pa.Table.from_pylist(rows))
    assert out["ok"].all() and len(out["obs_id"]) == 9
    assert out["sv"].shape == (9, 64) and out["q_nili"].shape == (9, 64)
    assert [o["obs_id"] for r in rows for o in r["observations"]] == out["obs_id"].tolist()
    assert out["label"].tolist() == [
        str(o["class"])
        for t in range(3)
        for o in synthetic.make_tile(5, t, obs_per_tile=3, tile_size=48, sv_size=32)["obs"]
    ]
    # The global query is the same for the street views of one tile; NILI queries differ.
    np.testing.assert_array_equal(out["q_global"][0], out["q_global"][2])
    assert not np.allclose(out["q_nili"][0], out["q_nili"][1])
    # Same as the model applied by hand to the decoded sample.
    model = load_pretrained(tiny_export)
    sample = decode.decode_row(rows[0], emb.spec)
    with torch.no_grad():
        tokens = model.rs_tokens(torch.from_numpy(sample["rs"])[None])
        nili = model.query_tokens(tokens, torch.from_numpy(sample["xy"])[None, :3], "nili")[0]
    np.testing.assert_allclose(out["q_nili"][:3], nili.numpy(), rtol=1e-5, atol=1e-5)


def test_manifest_embedder_caps_observations_and_reports_bad_tiles(tiny_export: Path, rows: list[dict]):
    broken = {**rows[1], "rs_bytes": b"II*\x00garbage"}
    out = _embedder(tiny_export, max_obs=2)(pa.Table.from_pylist([rows[0], broken, rows[2]]))
    ok = out["ok"]
    assert ok.sum() == 4 and (~ok).sum() == 1
    assert out["bad_reason"][~ok][0].startswith(decode.Reason.RS_UNDECODABLE)
    assert out["obs_index"][ok].tolist() == [0, 1, 0, 1]


def test_file_embedders(tiny_export: Path, tmp_path: Path, shared_data: Path):
    s3 = storage.S3Options()
    tifs = sorted((shared_data / "satclip-s2" / "images").glob("*.tif"))[:2]
    rs = extract.RSFileEmbedder({"ref": extract.ModelPayload.from_dir(tiny_export)}, S2_BANDS_12, s3)
    uris = np.array([str(tifs[0]), str(tmp_path / "missing.tif"), str(tifs[1])], dtype=object)
    out = rs({"uri": uris, "row": np.arange(3)})
    assert out["ok"].tolist() == [True, False, True] and "missing.tif" in out["bad_reason"][1]
    assert out["emb"].shape == (3, 64) and out["baseline"].shape == (3, 20)
    jpg = tmp_path / "a.jpg"
    jpg.write_bytes(decode.encode_jpeg(synthetic.render_sv(np.random.default_rng(0), 2, 40)))
    sv = extract.SVFileEmbedder({"ref": extract.ModelPayload.from_dir(tiny_export)}, (0.5,) * 3, (0.5,) * 3, s3)
    out = sv({"uri": np.array([str(jpg)], dtype=object), "row": np.arange(1)})
    assert out["ok"].all() and out["emb"].shape == (1, 64) and out["baseline"].shape == (1, 192)
