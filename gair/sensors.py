"""Sensor facts: Sentinel-2 band names and per-band statistics. Plain Python, imports nothing.

The bottom of the package tree: configs (the model's default bands), the manifest schema
and the transforms all read their band lists here, so no module imports upward for them.
"""

from __future__ import annotations

# Every band of a Sentinel-2 L1C product, in band order.
S2_BANDS_13 = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")

# Sentinel-2 L2A bands of a 12-band tile (B10 is a cirrus band absent from L2A products).
S2_BANDS_12 = tuple(b for b in S2_BANDS_13 if b != "B10")

# The bands the reference GAIR feeds its RS encoder (B1 and B9 dropped from 12-band tiles).
S2_BANDS_10 = tuple(b for b in S2_BANDS_12 if b not in ("B1", "B9"))

# Per-band Sentinel-2 L2A statistics (digital numbers, reflectance x 10000). The ten bands
# GAIR uses carry the reference GAIR's values (so released weights see the inputs they were
# trained on); B1, B9 and B10 fall back to the fMoW-Sentinel statistics of SatMAE/CROMA.
S2_MEAN: dict[str, float] = {
    "B1": 1370.19, "B2": 1172.9397, "B3": 1378.0846, "B4": 1509.3327, "B5": 1750.0275, "B6": 2073.2758,
    "B7": 2207.3283, "B8": 2245.1629, "B8A": 2284.6384, "B9": 582.73, "B10": 14.77, "B11": 2231.7283,
    "B12": 1899.1932,
}  # fmt: skip
S2_STD: dict[str, float] = {
    "B1": 633.15, "B2": 706.6250, "B3": 720.1862, "B4": 783.1424, "B5": 707.1962, "B6": 714.2782,
    "B7": 748.1827, "B8": 852.3585, "B8A": 762.0849, "B9": 472.38, "B10": 14.31, "B11": 690.0165,
    "B12": 669.9036,
}  # fmt: skip
