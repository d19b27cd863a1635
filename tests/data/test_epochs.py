"""Epochs of the training pipeline: each draws anew, presents every observation once, resumes exactly."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch

from gair.data import pipeline, synthetic
from tests.data.conftest import tiny_data_cfg, tiny_model_cfg

pytestmark = pytest.mark.usefixtures("ray_start_2_cpus")


@pytest.fixture(scope="module")
def manifest_6_obs(tmp_path_factory: pytest.TempPathFactory) -> str:
    """8 tiles x 6 observations in 4 shards: with K=4, two visits per tile, 16 samples an epoch."""
    out = tmp_path_factory.mktemp("epochs")
    return synthetic.write_synthetic(
        str(out), tiles=8, obs_per_tile=6, seed=5, tile_size=40, sv_size=32, rows_per_shard=2, row_group_rows=2
    )


def _observations(batches: list[dict[str, torch.Tensor]]) -> collections.Counter:
    """The (lon, lat) of every street view presented (float32, exactly as decoded), counted."""
    return collections.Counter(tuple(ll.tolist()) for b in batches for ll in b["lonlat"][b["sv_mask"]].numpy())


def test_epochs_draw_anew_present_every_observation_once_and_resume_exactly(manifest_6_obs: str) -> None:
    data_cfg, model_cfg = tiny_data_cfg(obs_per_tile=4, batch_size=4, next_epoch_lookahead=2), tiny_model_cfg()
    splits = pipeline.EpochSplits(manifest_6_obs, data_cfg, model_cfg, world_size=1)
    source = pipeline.EpochBatchSource(splits, data_cfg, model_cfg)
    epochs = [list(source.batches_for_epoch(e)) for e in range(2)]  # epoch 1 was prefetched during epoch 0

    from gair.data import manifest

    everything = collections.Counter(
        tuple(np.float32([o["lon"], o["lat"]]).tolist())
        for rows in manifest.iter_manifest_rows(manifest_6_obs)
        for r in rows
        for o in r["observations"]
    )
    assert len(everything) == 48
    for batches in epochs:
        assert len(batches) == 4  # 8 tiles x ceil(6 / 4) visits = 16 samples
        assert _observations(batches) == everything  # every observation exactly once per epoch
    # Different crops, flips, extra points and observation groupings in the second epoch.
    first = torch.cat([b["rs"] for b in epochs[0]])
    second = torch.cat([b["rs"] for b in epochs[1]])
    assert not torch.equal(first, second)
    assert {tuple(np.round(b["xy_extra"].numpy().ravel(), 4)) for b in epochs[0]}.isdisjoint(
        {tuple(np.round(b["xy_extra"].numpy().ravel(), 4)) for b in epochs[1]}
    )

    source.close()  # drop epoch 2, prefetched during epoch 1

    # Resume mid-epoch in a fresh source (a restarted worker): the same batches as the uninterrupted run.
    resumed = list(pipeline.EpochBatchSource(splits, data_cfg, model_cfg).batches_for_epoch(1, skip_batches=2))
    assert len(resumed) == 2
    for got, want in zip(resumed, epochs[1][2:], strict=True):
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=0, atol=0)


def test_the_first_epoch_prefetches_the_next_before_it_ends_from_the_manifests_estimate(manifest_6_obs: str) -> None:
    import time

    import ray

    data_cfg, model_cfg = tiny_data_cfg(obs_per_tile=4, batch_size=4, next_epoch_lookahead=2), tiny_model_cfg()
    local = pipeline.EpochSplits(manifest_6_obs, data_cfg, model_cfg, world_size=2)
    # Footers (8 rows) x visits (ceil(6 / 4) = 2) = 16 samples; 2 ranks of 4-tile batches: 2 each.
    assert local.epoch_samples() == 16
    deadline = time.monotonic() + 60
    while local.batches_per_rank() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert local.batches_per_rank() == 2

    # Through the actor the workers reach (asked without waiting, batch after batch).
    actor = ray.remote(num_cpus=0)(pipeline.EpochSplits).remote(manifest_6_obs, data_cfg, model_cfg, 1)
    ray.get(actor.__ray_ready__.remote(), timeout=120)
    source = pipeline.EpochBatchSource(actor, data_cfg, model_cfg)
    epoch0 = source.batches_for_epoch(0)
    got = [next(epoch0) for _ in range(2)]
    deadline = time.monotonic() + 60
    while source._known_length() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert source.length_estimate == 4 and source.epoch_length is None  # 16 samples, 4-tile batches, 1 rank
    got.append(next(epoch0))  # after 2 of the 4 batches (4 - next_epoch_lookahead): epoch 1 is started
    assert source._next is not None and source._next[0] == 1
    got += list(epoch0)
    assert len(got) == 4 and source.epoch_length == 4
    assert len(list(source.batches_for_epoch(1))) == 4  # the prefetched epoch, whole
    source.close()
    # A source without an estimate (a plain callable) has none to use.
    plain = pipeline.EpochBatchSource(lambda epoch: local.split(epoch, 0), data_cfg, model_cfg)
    assert plain._known_length() is None and plain.length_estimate == 0


def test_next_epoch_is_prefetched_only_when_the_run_reaches_it(manifest_6_obs: str) -> None:
    data_cfg, model_cfg = tiny_data_cfg(obs_per_tile=4, batch_size=4, next_epoch_lookahead=2), tiny_model_cfg()
    splits = pipeline.EpochSplits(manifest_6_obs, data_cfg, model_cfg, world_size=1)
    # 6 batches left: epoch 0 (4 batches) and part of epoch 1; epoch 2 is never needed.
    source = pipeline.EpochBatchSource(splits, data_cfg, model_cfg)
    source.batches_left = 6
    assert len(list(source.batches_for_epoch(0))) == 4
    assert source._next is not None and source._next[0] == 1  # epoch 1 is needed: prefetched
    epoch1 = source.batches_for_epoch(1)
    assert len([next(epoch1) for _ in range(2)]) == 2
    assert len(list(epoch1)) == 2 and source.batches_left == -2  # the epoch runs out (the loop stops at 0)
    assert source._next is None  # no pipeline for epoch 2 was started
    # Unknown budget: the next epoch is prefetched as before.
    source = pipeline.EpochBatchSource(splits, data_cfg, model_cfg)
    list(source.batches_for_epoch(0))
    assert source._next is not None
    source.close()
    assert source._next is None


def test_the_next_epochs_split_is_made_while_this_epoch_runs(manifest_6_obs: str) -> None:
    import ray

    data_cfg, model_cfg = tiny_data_cfg(obs_per_tile=4, batch_size=4, next_epoch_lookahead=2), tiny_model_cfg()
    splits = pipeline.EpochSplits(manifest_6_obs, data_cfg, model_cfg, world_size=1)
    splits.split(0, 0)
    assert sorted(splits._splits) == [0, 1]  # epoch 1's split was made with epoch 0's
    warm = splits._splits[1][0][0]
    ray.get(warm._coord_actor.__ray_ready__.remote(), timeout=120)  # its coordinator is up before it is asked for
    assert splits.split(1, 0) is warm and sorted(splits._splits) == [0, 1, 2]
    # Each split's Dataset (the owner of its input blocks) is held exactly as long as the split.
    assert sorted(splits._datasets) == [0, 1, 2]
    # The split made ahead serves exactly what one made on demand serves.
    cold_cfg = tiny_data_cfg(obs_per_tile=4, batch_size=4, next_epoch_lookahead=0)
    cold = pipeline.EpochSplits(manifest_6_obs, cold_cfg, model_cfg, world_size=1)
    assert not cold.warm(1)
    cold_it = cold.split(1, 0)
    assert sorted(cold._splits) == [1]  # nothing made ahead with next_epoch_lookahead=0
    got = list(pipeline.TrainingBatches(warm, data_cfg, model_cfg, epoch=1))
    want = list(pipeline.TrainingBatches(cold_it, data_cfg, model_cfg, epoch=1))
    assert len(got) == len(want) == 4
    for g, w in zip(got, want, strict=True):
        for key in w:
            torch.testing.assert_close(g[key], w[key], rtol=0, atol=0)
    # Jumping ahead (a run resumed later) keeps only the previous, the current and the next epoch.
    splits.split(4, 0)
    assert sorted(splits._splits) == [4, 5]
    assert sorted(splits._datasets) == [4, 5]
