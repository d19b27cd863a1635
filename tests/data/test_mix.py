"""Several training manifests mixed by weight (data.train_manifests), on a real local Ray."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch

from gair.configs.data import ManifestSource
from gair.data import decode, manifest, pipeline, synthetic
from tests.data.conftest import tiny_data_cfg, tiny_model_cfg


@pytest.fixture(scope="module")
def two_manifests(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A: 30 tiles in 5 shards, B: 6 tiles in 2 shards (3 observations each: one visit per tile at K=3)."""
    out = tmp_path_factory.mktemp("mix")
    kw = dict(obs_per_tile=3, tile_size=40, sv_size=32, rows_per_shard=6, row_group_rows=3)
    a = synthetic.write_synthetic(str(out / "big"), tiles=30, seed=11, **kw)
    b = synthetic.write_synthetic(str(out / "small"), tiles=6, seed=12, **{**kw, "rows_per_shard": 3})
    return a, b


def _mix_cfg(a: str, b: str, **overrides):
    sources = [ManifestSource(uri=a, weight=1.0, name="big"), ManifestSource(uri=b, weight=1.0, name="small")]
    return tiny_data_cfg(train_manifests=sources, obs_per_tile=3, batch_size=4, next_epoch_lookahead=0, **overrides)


def _expected(uris: tuple[str, str], seed: int, epoch: int, rates: list[float]) -> list[int]:
    """Tiles of each source this epoch, from the documented rule (one visit per tile)."""
    return [
        sum(
            pipeline.mix_copies(seed, epoch, i, str(r["tile_id"]), rates[i])
            for rows in manifest.iter_manifest_rows(uri)
            for r in rows
        )
        for i, uri in enumerate(uris)
    ]


def _drawn(uri: str, seed: int, epoch: int, rate: float) -> set[str]:
    ids = (str(r["tile_id"]) for rows in manifest.iter_manifest_rows(uri) for r in rows)
    return {t for t in ids if pipeline.mix_copies(seed, epoch, 0, t, rate)}


def test_rates_follow_the_weights_over_the_total_size() -> None:
    files = pipeline.ManifestFiles("x", (), None)  # type: ignore[arg-type]
    sources = [pipeline.MixSource("a", 0.7, files, 900), pipeline.MixSource("b", 0.3, files, 100)]
    rates = pipeline.mix_rates(sources)
    assert rates == [700 / 900, 300 / 100]  # T = 1000 tiles: 700 of a (a sample of it), 300 of b (3 copies)
    # Over many tiles the hashed draw keeps the proportion, differently each epoch.
    draws = [[pipeline.mix_copies(0, e, 0, f"t{k}", 700 / 900) for k in range(900)] for e in range(2)]
    assert all(abs(sum(d) - 700) < 60 for d in draws) and draws[0] != draws[1]
    assert {pipeline.mix_copies(0, 0, 1, f"t{k}", 3.0) for k in range(100)} == {3}


def test_copies_of_a_tile_draw_their_own_augmentation() -> None:
    first = decode.row_rng(0, 0, "t", 0).random(4)
    assert np.array_equal(first, decode.row_rng(0, 0, "t", 0, copy=0).random(4))
    assert not np.array_equal(first, decode.row_rng(0, 0, "t", 0, copy=1).random(4))


@pytest.mark.slow  # about 60 s on 2 CPUs: three epochs decoded
@pytest.mark.usefixtures("ray_start_2_cpus")
def test_mixed_epochs_follow_the_weights_draw_anew_and_resume_exactly(two_manifests: tuple[str, str]) -> None:
    a, b = two_manifests
    data_cfg, model_cfg = _mix_cfg(a, b), tiny_model_cfg()
    splits = pipeline.EpochSplits("", data_cfg, model_cfg, world_size=1)
    assert [(s.label, s.rows) for s in splits.sources] == [("big", 30), ("small", 6)]
    rates = pipeline.mix_rates(splits.sources)
    assert rates == [18 / 30, 3.0]  # T = 36: 18 tiles of each; every small tile three times
    assert splits.epoch_samples() == 36  # the first epoch's length, estimated before it runs (one visit a tile)
    source = pipeline.EpochBatchSource(splits, data_cfg, model_cfg)
    epochs = [list(source.batches_for_epoch(e)) for e in range(2)]
    for e, batches in enumerate(epochs):
        want = _expected((a, b), data_cfg.seed, e, rates)
        got = collections.Counter(int(i) for bt in batches for i in bt["source"])
        assert want[1] == 18
        assert abs(want[0] - 18) <= 8  # a binomial draw around 18
        # Every tile of the epoch is in a batch but the short last batch (dropped).
        assert sum(want) - 4 < sum(got.values()) <= sum(want)
        assert all(got[i] <= want[i] for i in range(2))
        assert all(bt["source"].device.type == "cpu" and bt["source"].shape == (4,) for bt in batches)
    # Another epoch, another draw: other tiles of the big manifest, other samples.
    assert _drawn(a, 0, 0, rates[0]) != _drawn(a, 0, 1, rates[0])
    assert not torch.equal(epochs[0][0]["rs"], epochs[1][0]["rs"])
    # The three copies of a small tile are three different samples (their own crops, flips, points).
    small = torch.cat([bt["xy_extra"][bt["source"] == 1] for bt in epochs[0]])
    assert len({tuple(np.round(x.numpy().ravel(), 5)) for x in small}) == len(small)

    # Deterministic per (seed, epoch), and a resumed epoch (a fresh actor, batches skipped) is the same.
    fresh = pipeline.EpochSplits("", data_cfg, model_cfg, world_size=1)
    resumed = list(pipeline.EpochBatchSource(fresh, data_cfg, model_cfg).batches_for_epoch(1, skip_batches=2))
    assert len(resumed) == len(epochs[1]) - 2
    for got, want in zip(resumed, epochs[1][2:], strict=True):
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=0, atol=0)


def test_a_missing_manifest_of_the_mix_is_named(tmp_path, two_manifests: tuple[str, str]) -> None:
    cfg = _mix_cfg(two_manifests[0], str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError):
        pipeline.list_sources(cfg)
