"""gair.train.checkpoint: the loop's position beside the DeepSpeed state."""

from __future__ import annotations

import dataclasses
import json

from gair.train import checkpoint


def test_train_state_round_trips_and_names_its_tag(tmp_path):
    state = checkpoint.TrainState(step=12, epoch=1, batches_in_epoch=5, samples_seen=96)
    assert state.tag == "step00000012"
    (tmp_path / checkpoint.STATE_FILE).write_text(json.dumps(dataclasses.asdict(state)))
    assert checkpoint.read_state(tmp_path) == state
