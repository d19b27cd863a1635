from __future__ import annotations

import numpy as np
import pytest
import rasterio

from gair import geo
from gair.data import decode, manifest
from gair.data.decode import BadRowError, DecodeSpec
from tests.data.conftest import BAD_ROW_CORPUS, TINY_BANDS, bad_row, good_row


def spec(**kw) -> DecodeSpec:
    base = dict(bands=TINY_BANDS, rs_size=32, sv_size=24, obs_per_tile=4, extra_points=6)
    base.update(kw)
    return DecodeSpec(**base)


def test_decode_row_shapes_and_padding() -> None:
    out = decode.decode_row(good_row(obs=3), spec())
    assert out["rs"].shape == (5, 32, 32) and out["rs"].dtype == np.float32
    assert out["rs"].min() >= 0.0 and out["rs"].max() <= 1.0
    assert out["sv"].shape == (4, 24, 24, 3) and out["sv"].dtype == np.uint8
    assert out["sv_mask"].tolist() == [True, True, True, False]
    assert not out["sv"][3].any() and out["sv"][:3].any()
    assert out["xy_extra"].shape == (6, 2) and out["lonlat_extra"].shape == (6, 2)


@pytest.mark.parametrize("augment", [False, True])
def test_xy_and_lonlat_agree_through_the_tile_georeference(augment: bool) -> None:
    """Un-augmenting xy and mapping through the tile's CRS gives back lonlat (both CRS kinds)."""
    for index in (0, 1):  # 0: UTM, 1: EPSG:4326
        row = good_row(index, obs=3)
        out = decode.decode_row(row, spec(augment=augment))
        info = decode.check_georeference(row)
        # Compare with the manifest's float64 (lon, lat): float32 degrees are only good to about a metre.
        lonlat64 = np.array([[o["lon"], o["lat"]] for o in row["observations"]])
        np.testing.assert_allclose(out["lonlat"][:3], lonlat64, atol=1e-4)
        want = geo.lonlat_to_xy(lonlat64, info.crs, info.transform, info.width, info.height)
        assert geo.inside(out["xy"][:3]).all()
        if not augment:
            np.testing.assert_allclose(out["xy"][:3], want, atol=1e-4)
        back = geo.xy_to_lonlat(out["xy_extra"].astype(np.float64), info.crs, info.transform, info.width, info.height)
        if not augment:
            np.testing.assert_allclose(back, out["lonlat_extra"], atol=1e-4)
        else:
            assert not np.allclose(out["xy"][:3], want, atol=1e-3)  # the crop/flip moved them


def test_decode_is_deterministic_for_seed_and_varies_with_epoch() -> None:
    row = good_row(obs=8)
    a = decode.decode_row(row, spec(augment=True, seed=1))
    b = decode.decode_row(row, spec(augment=True, seed=1))
    c = decode.decode_row(row, spec(augment=True, seed=1, epoch=1))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["xy_extra"], c["xy_extra"])


def test_more_observations_than_k_are_subsampled() -> None:
    out = decode.decode_row(good_row(obs=9), spec(obs_per_tile=4, augment=True))
    assert out["sv_mask"].all()


@pytest.mark.parametrize("kind, mutate, reason", BAD_ROW_CORPUS, ids=[k for k, _, _ in BAD_ROW_CORPUS])
def test_bad_row_corpus_gets_its_reason(kind: str, mutate, reason: str) -> None:
    """Each kind of bad input gets its specific reason, and the validator reports it.

    A bad tile raises BadRowError; a bad observation is skipped and reported while its tile
    keeps its two good observations.
    """
    row = bad_row(kind)
    if reason in decode.OBSERVATION_REASONS:
        skipped: list[BadRowError] = []
        out = decode.decode_row(row, spec(obs_per_tile=3), skipped)
        assert [e.reason for e in skipped] == [reason]
        assert skipped[0].item_id.startswith(f"bad-{kind}")
        assert out["sv_mask"].tolist() == [True, False, True] or out["sv_mask"].sum() == 2
    else:
        with pytest.raises(BadRowError) as err:
            decode.decode_row(row, spec(obs_per_tile=3))
        assert err.value.reason == reason
        assert err.value.item_id.startswith(f"bad-{kind}")
    assert [p.reason for p in manifest.check_row(row)] == [reason]
    rows = decode.decode_rows([row], spec(obs_per_tile=3, augment=True, visit_all=True))
    assert not decode.non_finite_rows(rows).any()


def test_decode_rows_counts_every_failure_and_never_raises() -> None:
    """An unforeseen exception is a counted decode_error, not a crashed decode task."""
    weird = good_row(1)
    weird["width"] = "wide"
    seen: list[BadRowError] = []
    out = decode.decode_rows([good_row(0), weird, bad_row("sv_garbage")], spec(), on_bad=seen.append)
    assert out["ok"].tolist() == [True, False, True]
    assert out["bad_reason"][1].startswith(f"{decode.Reason.DECODE_ERROR}: ")
    assert [e.reason for e in seen] == [decode.Reason.DECODE_ERROR]
    assert out["skipped_obs"].tolist() == ["", "", f"{decode.Reason.SV_UNDECODABLE}: bad-sv_garbage-o1"]


@pytest.mark.parametrize("dtype, value", [("float32", None), ("float32", np.inf), ("float64", -np.inf), ("uint16", 0)])
def test_a_few_nodata_pixels_are_filled(dtype: str, value) -> None:
    """NaN, Inf and the declared nodata value below max_nodata_fraction: filled, as the reference's nan_to_num."""
    from tests.data.conftest import _rs_with_nodata

    row = good_row(0)
    _rs_with_nodata(0.25, value, dtype)(row)
    image, info = decode.decode_geotiff(row["rs_bytes"])
    assert decode.nodata_mask(image, info.nodata).any(axis=0).mean() == pytest.approx(0.25, abs=0.03)
    out = decode.decode_row(row, spec(max_nodata_fraction=0.3))
    assert np.isfinite(out["rs"]).all()
    clean = decode.decode_row(good_row(0), spec())
    # The filled rows hold the value of a 0 reflectance after normalization; the others are untouched.
    assert not np.allclose(out["rs"][:, :6], clean["rs"][:, :6]) and np.allclose(out["rs"][:, -6:], clean["rs"][:, -6:])
    with pytest.raises(BadRowError, match="max_nodata_fraction"):
        decode.decode_row(row, spec(max_nodata_fraction=0.2))


def test_visits_present_every_observation_once_per_epoch_with_fresh_draws() -> None:
    """9 observations, K=4: 3 visits with disjoint observations covering all 9; another epoch draws anew."""
    row = good_row(obs=9)
    all_lonlat = {(round(o["lon"], 4), round(o["lat"], 4)) for o in row["observations"]}

    def epoch(e: int) -> dict[str, np.ndarray]:
        return decode.decode_rows([row], spec(obs_per_tile=4, augment=True, visit_all=True, seed=3, epoch=e))

    a, again, b = epoch(0), epoch(0), epoch(1)
    for out in (a, b):
        assert len(out["rs"]) == 3 and out["sv_mask"].sum(axis=1).tolist() == [4, 4, 1]
        seen = [(round(float(x), 4), round(float(y), 4)) for x, y in out["lonlat"][out["sv_mask"]]]
        assert len(seen) == 9 and set(seen) == all_lonlat  # each observation exactly once
        assert len({out["xy_extra"][v].tobytes() for v in range(3)}) == 3  # each visit its own draws
    for key in a:
        np.testing.assert_array_equal(a[key], again[key])  # deterministic in (seed, epoch, tile)
    assert not np.array_equal(a["rs"], b["rs"]) and not np.array_equal(a["lonlat"], b["lonlat"])


def test_corpus_has_at_least_ten_distinct_reasons() -> None:
    assert len({r for _, _, r in BAD_ROW_CORPUS}) >= 10


def test_decode_real_sentinel2_tile(real_tiles) -> None:
    path = real_tiles[0]
    data = path.read_bytes()
    image, info = decode.decode_geotiff(data)
    assert image.shape == (12, 256, 256) and image.dtype == np.uint16
    assert info.crs.startswith("EPSG:32")
    with rasterio.open(path) as src:
        np.testing.assert_array_equal(image, src.read())


def test_color_jitter_is_seeded_per_row_and_touches_only_its_bands() -> None:
    """The reference's colour jitter: RS on three bands (p 0.7), SV ColorJitter 0.1 x 4 (p 0.3)."""
    row = good_row(obs=3)
    plain = decode.decode_row(row, spec(augment=True))
    jit = spec(augment=True, rs_jitter_p=1.0, rs_jitter_bands=("B3", "B4", "B11"), sv_jitter_p=1.0)
    a, b = decode.decode_row(row, jit), decode.decode_row(row, jit)
    for k in plain:  # drawn last: every earlier draw (crop, flips, points) is unchanged
        if k not in ("rs", "sv"):
            np.testing.assert_array_equal(a[k], plain[k])
    np.testing.assert_array_equal(a["rs"], b["rs"])  # same (seed, epoch, tile): same jitter
    changed = [not np.allclose(a["rs"][i], plain["rs"][i]) for i in range(len(TINY_BANDS))]
    assert changed == [False, True, True, False, True]
    assert a["rs"].min() >= 0.0 and a["rs"].max() <= 1.0
    assert not np.array_equal(a["sv"][:3], plain["sv"][:3]) and not a["sv"][3].any()
    other_epoch = decode.decode_row(row, DecodeSpec(**{**jit.__dict__, "epoch": 1}))
    assert not np.array_equal(other_epoch["rs"], a["rs"])
    # p = 0 and evaluation (augment off) leave the pixels alone.
    off = decode.decode_row(row, spec(rs_jitter_p=1.0, sv_jitter_p=1.0, rs_jitter_bands=("B3", "B4", "B11")))
    np.testing.assert_array_equal(off["rs"], decode.decode_row(row, spec())["rs"])


def test_rs_flip_off_keeps_points_unflipped() -> None:
    row = good_row(obs=3)
    out = decode.decode_row(row, spec(augment=True, crop_min_scale=1.0, rs_flip=False))
    ref = decode.decode_row(row, spec())
    np.testing.assert_allclose(out["xy"], ref["xy"], atol=1e-6)
    np.testing.assert_array_equal(out["rs"], ref["rs"])


def test_decode_rows_builds_no_aws_session_with_credentials_in_the_environment(monkeypatch) -> None:
    """GDAL only reads bytes already fetched: decoding must not build a boto3 session per call
    (``rasterio.Env()`` does when AWS credentials are in the environment: ~20 ms each)."""
    import rasterio.session

    for key, value in {
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    built: list[object] = []
    real_init = rasterio.session.AWSSession.__init__

    def counting_init(self, *args, **kwargs):
        built.append(self)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(rasterio.session.AWSSession, "__init__", counting_init)
    with rasterio.Env():  # the counter sees what rasterio.Env() alone does here
        pass
    assert built, "rasterio.Env() no longer builds an AWS session from the environment: drop this test's premise"
    rows = [good_row(0), good_row(1)]
    built.clear()
    out = decode.decode_rows(rows, spec())
    assert out["ok"].all() and built == []
    image = decode.decode_geotiff(rows[0]["rs_bytes"])[0]  # outside decode_rows' environment too
    decode.encode_geotiff(image, "EPSG:32633", (10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0))
    assert built == []
