"""The data position of a checkpoint rescaled to another worker count (no engine needed)."""

from __future__ import annotations

from gair.train.checkpoint import TrainState
from gair.train.elastic import rescale_position


def test_same_samples_consumed_with_another_worker_count():
    saved = TrainState(step=6, epoch=1, batches_in_epoch=6, samples_seen=96, world_size=2)
    one = rescale_position(saved, 1)
    assert (one.batches_in_epoch, one.world_size, one.step, one.epoch) == (12, 1, 6, 1)
    four = rescale_position(saved, 4)
    assert four.batches_in_epoch == 3 and four.samples_seen == 96
    assert rescale_position(TrainState(batches_in_epoch=5, world_size=2), 4).batches_in_epoch == 2  # rounded down


def test_a_checkpoint_without_a_worker_count_keeps_its_position():
    old = TrainState(step=3, batches_in_epoch=3)  # written before the worker count was recorded
    assert rescale_position(old, 4).batches_in_epoch == 3
