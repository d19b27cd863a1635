"""Errors that retrying cannot heal, and the Ray Train failure policy that stops on them.

Ray Train restarts the worker group on any worker error, up to ``train.max_failures``
times. A restart only helps with transient faults (a killed worker, a network blip); an
error raised as :class:`NonRetryableError` (a batch larger than the shard, a full disk, a
run whose checkpoints all fail verification) would fail the same way every time, so the
policy ends the run at the first one.
"""

from __future__ import annotations

import errno
from typing import Any


class NonRetryableError(RuntimeError):
    """Raised in a worker for a failure that a restart cannot fix: the run stops at once."""


def is_non_retryable(exc: BaseException | None) -> bool:
    """A :class:`NonRetryableError`, or an ``OSError`` for a full disk, anywhere in the cause chain."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, NonRetryableError):
            return True
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def disk_full_error(exc: OSError, path: str, hint: str = "") -> NonRetryableError:
    """``exc`` (ENOSPC) as a non-retryable error naming the path that could not be written."""
    return NonRetryableError(f"disk full writing {exc.filename or path}: free space there{hint}")


def stop_on_non_retryable_policy(failure_config: Any) -> Any:
    """Ray Train's default failure policy, except that a worker group failure containing a
    non-retryable error is raised at once instead of retried ``max_failures`` times."""
    from ray.train.v2._internal.execution.failure_handling import DefaultFailurePolicy
    from ray.train.v2._internal.execution.failure_handling.failure_policy import FailureDecision
    from ray.train.v2.api.exceptions import WorkerGroupError

    class _StopOnNonRetryable(DefaultFailurePolicy):
        def make_decision(self, training_failed_error: Any) -> FailureDecision:
            if isinstance(training_failed_error, WorkerGroupError) and any(
                is_non_retryable(e) for e in training_failed_error.worker_failures.values()
            ):
                return FailureDecision.RAISE
            return super().make_decision(training_failed_error)

    return _StopOnNonRetryable(failure_config)


def non_retryable_reason(exc: BaseException) -> str | None:
    """The message of the non-retryable error behind ``exc`` (a Ray Train failure included), else None."""
    failures = getattr(exc, "worker_failures", None) or {}
    for rank, err in sorted(failures.items()):
        if is_non_retryable(err):
            return f"worker {rank}: {_first_line(err)}"
    return _first_line(exc) if is_non_retryable(exc) else None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
