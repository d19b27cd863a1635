"""gair.eval.location: the air-temperature regression on real stations, and bad CSVs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gair.configs import load_config
from gair.configs.eval import EvalConfig
from gair.eval import location
from gair.eval.tables import CSVInputError
from gair.hub import load_pretrained


def _cfg(csv: Path | str, *sets: str) -> EvalConfig:
    return load_config(
        EvalConfig, None, ["retrieval.enabled=false", f"location.csv={csv}", "location.probe.k_folds=3", *sets]
    )


def test_stations_regression_runs_on_real_data(shared_data: Path, tiny_export: Path):
    cfg = _cfg(shared_data / "satclip-s2" / "air_temperature_stations.csv")
    res = location.evaluate_location(load_pretrained(tiny_export), cfg)
    assert res.n_points == 3076 and res.lonlat.shape == (3076, 2)
    for probe in (res.gair, res.raw_lonlat):
        assert np.isfinite(probe.metrics["r2"]) and probe.metrics["rmse"] > 0
        assert probe.oof_pred.shape == (3076,)
    # Mean annual temperature is mostly a function of latitude: even raw (lon, lat) explain some of it.
    assert res.raw_lonlat.metrics["r2"] > 0.2


def test_world_grid_and_pca_colours(tiny_export: Path):
    grid, shape = location.world_grid(30.0)
    assert shape == (6, 12) and grid.shape == (72, 2)
    assert grid[0].tolist() == [-165.0, 75.0]  # row-major from the north-west
    rgb = location.pca_rgb(location.embed_locations(load_pretrained(tiny_export), grid))
    assert rgb.shape == (72, 3) and rgb.min() >= 0 and rgb.max() <= 1


def test_bad_csvs(tmp_path: Path, tiny_export: Path):
    model = load_pretrained(tiny_export)
    missing_col = tmp_path / "a.csv"
    missing_col.write_text("Lon,Latitude,meanT\n1,2,3\n")
    with pytest.raises(CSVInputError, match=r"lacks column\(s\) \['Lat'\].*'Latitude'"):
        location.evaluate_location(model, _cfg(missing_col))
    with pytest.raises(CSVInputError, match="does not exist"):
        location.evaluate_location(model, _cfg(tmp_path / "nope.csv"))
    empty = tmp_path / "empty.csv"
    empty.write_text("Lon,Lat,meanT\n")
    with pytest.raises(CSVInputError, match="no rows"):
        location.evaluate_location(model, _cfg(empty))
    swapped = tmp_path / "swapped.csv"
    swapped.write_text("Lon,Lat,meanT\n10,120,3\n20,30,4\n")
    with pytest.raises(CSVInputError, match="swapped"):
        location.evaluate_location(model, _cfg(swapped))
    text = tmp_path / "text.csv"
    text.write_text("Lon,Lat,meanT\n10,abc,3\n")
    with pytest.raises(CSVInputError, match="numeric"):
        location.evaluate_location(model, _cfg(text))
