"""The one place that chooses how tracker files are locked.

``file`` (the default) is :class:`filelock.FileLock`: an OS lock (``flock``) that the kernel releases
when the holder dies, right for trackers on a local disk. ``soft`` is :class:`filelock.SoftFileLock`:
an exclusively created marker file, for trackers on NFS, where ``flock`` between nodes is unreliable.
The environment variable ``SL_TRACKER_LOCK`` (``file`` or ``soft``) sets the default, so the commands
that run inside Slurm jobs can be switched per cluster without code changes.

Every process that touches one tracker must use the same kind: a ``file`` lock leaves its (empty) lock
file in place, which a ``soft`` lock takes for a held marker until its holder is judged gone.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from types import TracebackType

import filelock

from sl_pipelines.errors import ConfigurationError, TrackerLockTimeout

#: The environment variable naming the default lock kind.
LOCK_KIND_ENV = "SL_TRACKER_LOCK"


class LockKind(StrEnum):
    """How a tracker file is locked."""

    FILE = "file"
    SOFT = "soft"


# Seconds between attempts while another process holds the lock. A local flock attempt is one cheap
# system call, so waiters poll often (32 contending jobs hand the lock on in milliseconds); a soft lock
# creates a file, which on NFS is a server round trip, so it keeps filelock's gentler default.
_POLL_INTERVAL = {LockKind.FILE: 0.005, LockKind.SOFT: 0.05}


def default_lock_kind(environ: Mapping[str, str] | None = None) -> LockKind:
    """Returns the lock kind named by ``SL_TRACKER_LOCK``, or ``file`` when it is unset or empty.

    Raises:
        ConfigurationError: the variable names no lock kind.
    """
    value = (os.environ if environ is None else environ).get(LOCK_KIND_ENV, "").strip().lower()
    return _parse_kind(value, source=LOCK_KIND_ENV) if value else LockKind.FILE


def _parse_kind(value: str, *, source: str) -> LockKind:
    try:
        return LockKind(value)
    except ValueError:
        valid = ", ".join(repr(kind.value) for kind in LockKind)
        raise ConfigurationError(
            f"{source}={value!r} is not a lock kind: use one of {valid}.", key=LOCK_KIND_ENV
        ) from None


class TrackerLock:
    """A lock on a tracker file that fails with :class:`TrackerLockTimeout` instead of waiting forever.

    Use it as a context manager. It is reentrant within one thread, like the filelock it wraps.
    """

    def __init__(self, lock_path: Path, kind: LockKind, timeout: float, *, tracker_path: Path) -> None:
        self.lock_path = lock_path
        self.kind = kind
        self.timeout = timeout
        self.tracker_path = tracker_path
        lock_class = filelock.SoftFileLock if kind is LockKind.SOFT else filelock.FileLock
        self._lock = lock_class(lock_path, timeout=timeout, poll_interval=_POLL_INTERVAL[kind])

    def __enter__(self) -> TrackerLock:
        try:
            self._lock.acquire()
        except filelock.Timeout as exc:
            raise TrackerLockTimeout(
                f"Could not lock tracker {self.tracker_path} within {self.timeout:g} s because "
                f"another process holds {self.lock_path}: retry later, "
                "or delete that lock file if its holder is gone.",
                path=self.tracker_path,
                lock_path=self.lock_path,
                timeout=self.timeout,
            ) from exc
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._lock.release()

    @property
    def is_locked(self) -> bool:
        """True while this object holds the lock."""
        return self._lock.is_locked


def make_lock(
    lock_path: Path,
    kind: LockKind | str | None = None,
    timeout: float = 10.0,
    *,
    tracker_path: Path | None = None,
) -> TrackerLock:
    """Returns a lock on ``lock_path`` of the given kind, giving up after ``timeout`` seconds.

    Args:
        lock_path: the lock file, conventionally ``<tracker file>.lock`` beside the tracker.
        kind: ``file`` or ``soft``; None takes the default from ``SL_TRACKER_LOCK`` (else ``file``).
        timeout: seconds to wait for the lock; finite and not negative, so a lock never hangs.
        tracker_path: the file the lock guards, named in errors; defaults to ``lock_path`` less ``.lock``.

    Raises:
        ConfigurationError: ``kind`` or ``timeout`` is invalid.
    """
    if not (math.isfinite(timeout) and timeout >= 0):
        raise ConfigurationError(
            f"Lock timeout {timeout!r} for {lock_path} is invalid: use a finite number of seconds >= 0.",
            key="timeout",
        )
    resolved = default_lock_kind() if kind is None else _parse_kind(str(kind).lower(), source="lock kind")
    if tracker_path is None:
        tracker_path = lock_path.with_suffix("") if lock_path.suffix == ".lock" else lock_path
    return TrackerLock(lock_path, resolved, timeout, tracker_path=tracker_path)
