"""DeepSpeed checkpoints reported to Ray Train, with the loop's own position beside them.

A checkpoint directory holds the DeepSpeed tag folder (module state -- including the
location queue buffers -- optimizer shards of every rank, LR schedule),
``train_state.json`` (step, epoch, batches consumed in the epoch) and one manifest per
rank (``manifest-rank{R}.json``: the size and SHA-256 of every file that rank wrote).
Every worker writes its own shards into a local temporary directory and reports it; Ray
Train merges the files of all workers into one directory under ``run.storage_path``.

Before loading, a checkpoint is verified against its manifests (every rank's manifest
present, every listed file present with its size and checksum). Rank 0 picks the newest
checkpoint of the run that verifies -- falling back past a truncated or incomplete one
with one line saying so -- and broadcasts its choice, so every rank loads the same one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gair.train.errors import NonRetryableError, disk_full_error, is_non_retryable

STATE_FILE = "train_state.json"
MANIFEST_PREFIX = "manifest-rank"
CHECKPOINT_PREFIX = "checkpoint_"
SHARD_PREFIX = "gair-ckpt-"  # local shards: gair-ckpt-<pid>-<random>
_DIR_NAME = re.compile(r"^checkpoint_step(\d+)(?:-(\d+))?$")


@dataclass
class TrainState:
    """Where the loop is: what a resumed run needs besides the DeepSpeed state."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # passes over the training shard started
    batches_in_epoch: int = 0  # micro-batches consumed in the current epoch (data position)
    samples_seen: int = 0  # tiles consumed over all workers
    world_size: int = 0  # workers that wrote the checkpoint (0: unknown, an older checkpoint)
    source_tiles: dict[str, int] = dataclasses.field(default_factory=dict)  # per data.train_manifests label

    @property
    def tag(self) -> str:
        return f"step{self.step:08d}"


# Checkpoint directory names already in the run's storage (set on restore, the same on
# every rank): a step replayed after falling back gets a fresh name, never an old one's.
_taken_names: set[str] = set()


def save(engine: Any, state: TrainState, directory: str | Path, *, rank: int, world_size: int | None = None) -> Path:
    """Write this rank's DeepSpeed shards, (rank 0) the train state, and this rank's manifest."""
    from gair.distributed import get_world_size

    directory = Path(directory)
    world_size = get_world_size() if world_size is None else world_size
    state = dataclasses.replace(state, world_size=world_size)
    engine.save_checkpoint(str(directory), tag=state.tag, client_state={"train_state": dataclasses.asdict(state)})
    if rank == 0:
        (directory / STATE_FILE).write_text(json.dumps(dataclasses.asdict(state)))
    write_manifest(directory, rank=rank, world_size=world_size, step=state.step)
    return directory


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(directory: str | Path, *, rank: int, world_size: int, step: int) -> Path:
    """``manifest-rank{rank}.json``: size and SHA-256 of every file in ``directory`` (this rank's)."""
    root = Path(directory)
    files = {
        rel: {"size": (root / rel).stat().st_size, "sha256": _sha256(root / rel)}
        for rel in list_files(root)
        if not rel.startswith(MANIFEST_PREFIX)
    }
    out = root / f"{MANIFEST_PREFIX}{rank}.json"
    out.write_text(json.dumps({"rank": rank, "world_size": world_size, "step": step, "files": files}, indent=1))
    return out


def verify(directory: str | Path) -> list[str]:
    """What is wrong with a checkpoint directory (empty when its manifests all check out)."""
    root = Path(directory)
    manifests = sorted(root.glob(f"{MANIFEST_PREFIX}*.json"))
    if not manifests:
        return ["no manifest (incomplete upload, or written before manifests existed)"]
    problems: list[str] = []
    ranks: set[int] = set()
    world_size = 0
    for path in manifests:
        try:
            manifest = json.loads(path.read_text())
            ranks.add(int(manifest["rank"]))
            world_size = max(world_size, int(manifest["world_size"]))
            files = manifest["files"]
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(f"{path.name} is unreadable ({type(exc).__name__})")
            continue
        for rel, expected in sorted(files.items()):
            f = root / rel
            if not f.is_file():
                problems.append(f"{rel} is missing")
            elif f.stat().st_size != expected["size"]:
                problems.append(f"{rel} has {f.stat().st_size} bytes, expected {expected['size']}")
            elif _sha256(f) != expected["sha256"]:
                problems.append(f"{rel} fails its checksum")
    missing = sorted(set(range(world_size)) - ranks)
    if missing:
        problems.append(f"no manifest of rank(s) {', '.join(map(str, missing))} of {world_size}")
    if not problems and not (root / STATE_FILE).is_file():
        problems.append(f"{STATE_FILE} is missing")
    return problems


def read_state(directory: str | Path) -> TrainState:
    return TrainState(**json.loads((Path(directory) / STATE_FILE).read_text()))


def restore(engine: Any, directory: str | Path) -> TrainState:
    """Load module, optimizer and LR schedule from a checkpoint directory; returns its TrainState.

    A checkpoint written by another number of workers is resharded (``gair.train.elastic``)
    and its data position rescaled to this worker count.
    """
    from gair.distributed import get_world_size
    from gair.train import elastic

    state = read_state(directory)
    world = get_world_size()
    if state.world_size and state.world_size != world:
        if engine.global_rank == 0:
            print(
                f"checkpoint: {state.tag} was written by {state.world_size} workers; "
                f"resharding its model and optimizer states for {world}"
            )
        if engine.zero_optimization_stage() >= 1:
            elastic.load_resharded(engine, Path(directory) / state.tag)
        else:
            _load(engine, directory, state)
        return elastic.rescale_position(state, world)
    _load(engine, directory, state)
    return state


def _load(engine: Any, directory: str | Path, state: TrainState) -> None:
    load_path, _ = engine.load_checkpoint(
        str(directory), tag=state.tag, load_optimizer_states=True, load_lr_scheduler_states=True
    )
    if load_path is None:
        raise RuntimeError(f"DeepSpeed found no checkpoint {state.tag!r} in {directory}")


def _sort_key(name: str) -> tuple[int, int]:
    m = _DIR_NAME.match(name)
    return (int(m.group(1)), int(m.group(2) or 0)) if m else (-1, -1)


def list_checkpoints(run_uri: str, opts: Any | None = None) -> list[str]:
    """Names of the checkpoint directories under a run's storage directory, newest first.

    ``opts``: the :class:`gair.data.storage.S3Options` of object-store URIs (None: the environment's).
    """
    import pyarrow.fs as pafs

    from gair.data import storage

    fs, path = storage.resolve(run_uri, opts)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except FileNotFoundError:
        return []
    names = [i.base_name for i in infos if i.type == pafs.FileType.Directory and _DIR_NAME.match(i.base_name)]
    return sorted(names, key=_sort_key, reverse=True)


def _checkpoint_at(run_uri: str, name: str, opts: Any | None = None) -> Any:
    import ray.train

    from gair.data import storage

    fs, path = storage.resolve(storage.join(run_uri, name), opts)
    return ray.train.Checkpoint(path, filesystem=fs)


def choose_checkpoint(run_uri: str, latest: Any | None, *, log: Any = print, opts: Any | None = None) -> str | None:
    """The name of the newest checkpoint of the run that verifies (rank 0 calls this).

    ``latest`` is Ray Train's latest committed checkpoint (may be None, or gone from storage).
    Each checkpoint that fails verification is named in one line. Raises
    :class:`NonRetryableError` when checkpoints exist but none verifies: a restart could not
    fix that, and silently starting over would throw the run away.
    """
    names = list_checkpoints(run_uri, opts)
    if latest is not None:
        latest_name = Path(str(latest.path).rstrip("/")).name
        if latest_name not in names:
            log(f"checkpoint: Ray Train's latest checkpoint {latest_name} is gone from {run_uri}")
    rejected = []
    for name in names:
        with _checkpoint_at(run_uri, name, opts).as_directory() as directory:
            problems = verify(directory)
        if not problems:
            if rejected:
                log(f"checkpoint: resuming from {name}, the newest that verifies (skipped {', '.join(rejected)})")
            return name
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        log(f"checkpoint: {name} fails verification: {shown}")
        rejected.append(name)
    if rejected:
        raise NonRetryableError(
            f"no checkpoint of {run_uri} verifies ({', '.join(rejected)}): restore one, "
            "or start over under another run.name"
        )
    return None


def restore_verified(engine: Any, run_uri: str, name: str, opts: Any | None = None) -> TrainState:
    """Verify (this rank's copy of) checkpoint ``name`` and load it."""
    with _checkpoint_at(run_uri, name, opts).as_directory() as directory:
        problems = verify(directory)
        if problems:
            raise NonRetryableError(f"checkpoint {name} fails verification on this worker: {'; '.join(problems[:3])}")
        return restore(engine, directory)


def remember_taken(names: list[str]) -> None:
    _taken_names.clear()
    _taken_names.update(names)


def dir_name_for(state: TrainState) -> str:
    """``checkpoint_step00000012``, or ``checkpoint_step00000012-1`` when that name is taken."""
    name = f"{CHECKPOINT_PREFIX}{state.tag}"
    n = 0
    while (candidate := name if n == 0 else f"{name}-{n}") in _taken_names:
        n += 1
    _taken_names.add(candidate)
    return candidate


def report_with_checkpoint(engine: Any, state: TrainState, metrics: dict[str, float], *, rank: int) -> None:
    """Save a checkpoint on every worker and report it to Ray Train (all workers must call this).

    The local shard is deleted whatever happens (a failed save or upload included); shards
    left by workers that were killed meanwhile (another rank's failed upload ends the whole
    group) are deleted by the next save on the node. A full disk is a
    :class:`NonRetryableError` naming the path.
    """
    remove_stale_shards()
    tmp = tempfile.mkdtemp(prefix=f"{SHARD_PREFIX}{os.getpid()}-")
    try:
        try:
            save(engine, state, tmp, rank=rank)
        except OSError as exc:
            if is_non_retryable(exc):
                raise disk_full_error(exc, tmp, " or point TMPDIR elsewhere (local checkpoint shards)") from exc
            raise
        import ray.train

        ray.train.report(
            {**metrics, "step": state.step},
            checkpoint=ray.train.Checkpoint.from_directory(tmp),
            checkpoint_dir_name=dir_name_for(state),
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # Ray Train registers reports by polling the workers (every 2 s); a worker dying before
    # that would lose this checkpoint too. Wait until it is committed, so that a failure
    # costs at most one checkpoint interval.
    ray.train.get_all_reported_checkpoints(
        consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED, timeout_s=300
    )


def remove_stale_shards(tmp_root: str | None = None) -> list[str]:
    """Delete local checkpoint shards (``gair-ckpt-PID-*``) whose writing process is gone."""
    removed = []
    for path in Path(tmp_root or tempfile.gettempdir()).glob(f"{SHARD_PREFIX}*"):
        pid = path.name[len(SHARD_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_files(directory: str | Path) -> list[str]:
    root = Path(directory)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
