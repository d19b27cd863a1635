import json

import pytest
import torch

from gair import load_pretrained, save_pretrained
from tests.models._factory import random_lonlat, tiny_model


def test_safetensors_round_trip_reproduces_embeddings(tmp_path):
    m = tiny_model(seed=3, rs_bands=("B2", "B3", "B4", "B8"), rs_final_norm=True).eval()
    save_pretrained(m, tmp_path / "export", extra={"run_id": "abc"})
    assert (tmp_path / "export" / "model.safetensors").is_file()
    meta = json.loads((tmp_path / "export" / "config.json").read_text())
    assert meta["model"]["rs_bands"] == ["B2", "B3", "B4", "B8"] and meta["run_id"] == "abc"
    loaded = load_pretrained(tmp_path / "export")
    assert not loaded.training and loaded.cfg == m.cfg
    rs, sv, ll = torch.randn(2, 4, 32, 32), torch.randn(2, 3, 32, 32), random_lonlat(2)
    xy = torch.rand(2, 3, 2) * 2 - 1
    with torch.no_grad():
        assert torch.equal(m.encode_rs(rs), loaded.encode_rs(rs))
        assert torch.equal(m.encode_sv(sv), loaded.encode_sv(sv))
        assert torch.equal(m.encode_location(ll), loaded.encode_location(ll))
        assert torch.equal(m.query_rs(rs, xy), loaded.query_rs(rs, xy))


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a GAIR export"):
        load_pretrained(tmp_path)
    save_pretrained(tiny_model(), tmp_path / "e")
    (tmp_path / "e" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_pretrained(tmp_path / "e")
