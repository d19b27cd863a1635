"""Fault injection for recovery tests: kill one training worker once at a given step.

Set ``GAIR_FAULT_STEP=N`` and ``GAIR_FAULT_MARKER=/path`` in the workers' environment:
the last rank SIGKILLs itself right after optimizer step N, once (the marker file
records that it happened, so the replacement worker group trains on).
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = ("GAIR_FAULT_STEP", "GAIR_FAULT_MARKER")


def maybe_kill_worker(step: int, rank: int, world_size: int) -> None:
    at = os.environ.get("GAIR_FAULT_STEP")
    marker = os.environ.get("GAIR_FAULT_MARKER")
    if not at or not marker or step != int(at) or rank != world_size - 1:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, f"killed rank {rank} at step {step}\n".encode())
    os.close(fd)
    print(f"[fault injection] SIGKILL rank {rank} at step {step}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
