"""gair.sensors: the band lists nest and every band has its statistics; configs need no data code."""

from __future__ import annotations

import subprocess
import sys

from gair import sensors
from tests.conftest import REPO_ROOT


def test_band_lists_nest_in_band_order():
    assert len(sensors.S2_BANDS_13) == 13 and len(sensors.S2_BANDS_12) == 12 and len(sensors.S2_BANDS_10) == 10
    assert "B10" not in sensors.S2_BANDS_12 and not {"B1", "B9"} & set(sensors.S2_BANDS_10)
    order = {b: i for i, b in enumerate(sensors.S2_BANDS_13)}
    for bands in (sensors.S2_BANDS_12, sensors.S2_BANDS_10):
        assert [order[b] for b in bands] == sorted(order[b] for b in bands)


def test_every_band_has_mean_and_std():
    assert set(sensors.S2_MEAN) == set(sensors.S2_STD) == set(sensors.S2_BANDS_13)
    assert all(v > 0 for v in sensors.S2_STD.values())


def test_configs_import_no_data_code():
    code = "import sys, gair.configs.eval, gair.configs.train; print(sorted(m for m in sys.modules if m.startswith('gair.data')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
