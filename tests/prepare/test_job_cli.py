"""`jobs/prepare_tiles.py` front door: --help documents every key; bad configs and inputs exit 2 before Ray starts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gair.configs.base import describe
from gair.configs.prepare import PrepareConfig
from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "jobs"))
import prepare_tiles  # noqa: E402


def test_help_documents_every_option():
    out = subprocess.run(
        [sys.executable, "jobs/prepare_tiles.py", "--help"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    for key, _, help_ in describe(PrepareConfig):
        assert f"  {key} = " in out and help_ and help_[:40] in out.replace("\n      ", " ")


@pytest.mark.parametrize(
    "sets, message",
    [
        (["out=/tmp/x", "stac=a.json"], "street_views is required"),
        (["street_views=sv.csv", "out=/tmp/x"], "exactly one of `stac`"),
        (["street_views=sv.csv", "out=/tmp/x", "stac=a.json", "tile_size_m=1005"], "multiple of resolution_m"),
        (["street_views=sv.csv", "out=/tmp/x", "stac=a.json", "max_cloud_fraktion=0.2"], "max_cloud_fraction"),
    ],
)
def test_bad_config_exits_2_with_a_clear_message(sets, message, capsys):
    assert prepare_tiles.main([a for s in sets for a in ("--set", s)]) == 2
    assert message in capsys.readouterr().err


def test_missing_input_exits_2(tmp_path, capsys):
    sets = [f"street_views={tmp_path / 'nope.csv'}", f"stac={tmp_path / 'items.json'}", f"out={tmp_path / 'out'}"]
    assert prepare_tiles.main([a for s in sets for a in ("--set", s)]) == 2
    assert "error:" in capsys.readouterr().err
