"""DeepSpeed checkpoints reported to Ray Train, with the loop's own position beside them.

A checkpoint directory holds the DeepSpeed tag folder (module state -- including the
location queue buffers -- optimizer shards of every rank, LR schedule) and
``train_state.json`` (step, epoch, batches consumed in the epoch). Every worker writes
its own shards into a local temporary directory and reports it; Ray Train merges the
files of all workers into one directory under ``run.storage_path``.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATE_FILE = "train_state.json"


@dataclass
class TrainState:
    """Where the loop is: what a resumed run needs besides the DeepSpeed state."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # passes over the training shard started
    batches_in_epoch: int = 0  # micro-batches consumed in the current epoch (data position)
    samples_seen: int = 0  # tiles consumed over all workers

    @property
    def tag(self) -> str:
        return f"step{self.step:08d}"


def save(engine: Any, state: TrainState, directory: str | Path, *, rank: int) -> Path:
    """Write this rank's DeepSpeed shards and (rank 0) the train state into ``directory``."""
    directory = Path(directory)
    engine.save_checkpoint(str(directory), tag=state.tag, client_state={"train_state": dataclasses.asdict(state)})
    if rank == 0:
        (directory / STATE_FILE).write_text(json.dumps(dataclasses.asdict(state)))
    return directory


def read_state(directory: str | Path) -> TrainState:
    return TrainState(**json.loads((Path(directory) / STATE_FILE).read_text()))


def restore(engine: Any, directory: str | Path) -> TrainState:
    """Load module, optimizer and LR schedule from a checkpoint directory; returns its TrainState."""
    state = read_state(directory)
    load_path, _ = engine.load_checkpoint(
        str(directory), tag=state.tag, load_optimizer_states=True, load_lr_scheduler_states=True
    )
    if load_path is None:
        raise RuntimeError(f"DeepSpeed found no checkpoint {state.tag!r} in {directory}")
    return state


def report_with_checkpoint(engine: Any, state: TrainState, metrics: dict[str, float], *, rank: int) -> None:
    """Save a checkpoint on every worker and report it to Ray Train (all workers must call this)."""
    import ray.train

    with tempfile.TemporaryDirectory(prefix="gair-ckpt-") as tmp:
        save(engine, state, tmp, rank=rank)
        ray.train.report(
            {**metrics, "step": state.step},
            checkpoint=ray.train.Checkpoint.from_directory(tmp),
            checkpoint_dir_name=f"checkpoint_{state.tag}",
        )
    # Ray Train registers reports by polling the workers (every 2 s); a worker dying before
    # that would lose this checkpoint too. Wait until it is committed, so that a failure
    # costs at most one checkpoint interval.
    ray.train.get_all_reported_checkpoints(
        consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED, timeout_s=300
    )
