"""Typed tracker operations applied where the trackers live (on the server, or by the local backend).

``sl-tracker batch`` runs :func:`apply_operations` on the server for the ``Server``; the ``LocalBackend``
calls it in-process. Each operation holds the tracker's lock, and a failure of one never stops the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from sl_pipelines.adapters.locks import LockKind
from sl_pipelines.adapters.tracker_store import ProcessingTracker
from sl_pipelines.core.seams import TrackerAction, TrackerOperation, TrackerOutcome
from sl_pipelines.errors import SlPipelinesError, TrackerLockTimeout

_LOG = logging.getLogger("sl_pipelines")

MANAGER_JOB = "manager"
"""The job identity under which a manager records a failure that no job could record itself."""


def apply_operations(
    operations: Sequence[TrackerOperation], *, lock_kind: LockKind | str | None = None, timeout: float = 10.0
) -> tuple[TrackerOutcome, ...]:
    """Applies each operation under its tracker's lock; returns one outcome per operation, in order."""
    return tuple(_apply(op, lock_kind, timeout) for op in operations)


def _apply(op: TrackerOperation, lock_kind: LockKind | str | None, timeout: float) -> TrackerOutcome:
    try:
        tracker = ProcessingTracker(Path(op.path), lock_kind=lock_kind, timeout=timeout)
        if op.action is TrackerAction.CLAIM:
            tracker.start(op.manager_id, op.job_count)
        elif op.action is TrackerAction.ERROR:
            tracker.error(op.manager_id, job=op.job or MANAGER_JOB, reason=op.reason)
        elif op.action is TrackerAction.RETRY:
            tracker.retry(op.manager_id, op.job, op.attempt)
        else:
            tracker.abort()
    except TrackerLockTimeout as exc:
        return TrackerOutcome(ok=False, error=str(exc), transient=True)
    except SlPipelinesError as exc:
        _LOG.info("Tracker %s %s refused: %s", op.action.value, op.path, exc)
        return TrackerOutcome(ok=False, error=str(exc))
    return TrackerOutcome(ok=True)
