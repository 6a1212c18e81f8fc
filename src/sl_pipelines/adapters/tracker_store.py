"""The processing tracker file: the pure tracker state, kept in a YAML file under a lock.

Every read and write holds the lock file ``<tracker>.lock``. Writes are atomic (a temporary file in the
same folder, flushed and fsynced, then ``os.replace``), so a reader that copies the file without the
lock, such as the manager pulling it over SFTP, sees either the old or the new document, never half.
File-system failures surface as :class:`TrackerError` naming the file; a corrupt file is reported, never
reset, except by :meth:`ProcessingTracker.abort`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from sl_pipelines.adapters.locks import LockKind, TrackerLock, make_lock
from sl_pipelines.core.tracker_state import (
    IDLE_STATE,
    UNKNOWN_JOB,
    TrackerState,
    job_identity_from_env,
    record_completion,
    record_failure,
    record_retry,
    start_run,
    utc_now,
)
from sl_pipelines.core.tracker_text import dump_tracker_text, parse_tracker_text
from sl_pipelines.errors import SlPipelinesError, TrackerCorruptError, TrackerError

_LOG = logging.getLogger("sl_pipelines")
#: Mode of a new tracker file before the umask: readable and writable by the owner's group.
_NEW_FILE_MODE = 0o664


class ProcessingTracker:
    """A processing tracker file shared by the jobs of a pipeline run and its manager.

    Args:
        path: the tracker YAML file; its folder is created on the first write.
        lock_kind: ``file`` or ``soft`` (for NFS); None takes ``SL_TRACKER_LOCK``, else ``file``.
        timeout: seconds to wait for the lock before raising :class:`TrackerLockTimeout`.
        environ: where to find the Slurm job identity of a caller that passes none; ``os.environ``
            when None.
        clock: returns the current time as an ISO 8601 UTC string.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        lock_kind: LockKind | str | None = None,
        timeout: float = 10.0,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], str] = utc_now,
    ) -> None:
        self._path = Path(path)
        self._lock: TrackerLock = make_lock(self.lock_path, lock_kind, timeout, tracker_path=self._path)
        self._environ = environ
        self._clock = clock

    @property
    def path(self) -> Path:
        """The tracker YAML file."""
        return self._path

    @property
    def lock_path(self) -> Path:
        """The lock file beside the tracker: ``<name>.lock``."""
        return self._path.with_name(self._path.name + ".lock")

    @property
    def lock_kind(self) -> LockKind:
        """The kind of lock guarding the file."""
        return self._lock.kind

    def read(self) -> TrackerState:
        """Returns the tracker's state, read under the lock; a missing file is an idle tracker.

        A missing folder also reads as idle, without creating the folder or its lock file.

        Raises:
            TrackerCorruptError: the file is not a valid tracker document.
            TrackerLockTimeout: the lock could not be had in time.
        """
        if not self._path.parent.is_dir():
            return IDLE_STATE
        with self._os_errors("read"):
            self._align_lock_mode()
            with self._lock:
                return self._load()

    @property
    def is_running(self) -> bool:
        """True while a run holds the tracker."""
        return self.read().is_running

    @property
    def is_complete(self) -> bool:
        """True once every job of the run reported completion and none failed."""
        return self.read().is_complete

    @property
    def encountered_error(self) -> bool:
        """True once a job of the run reported a failure (until an abort or a new run)."""
        return self.read().encountered_error

    def start(self, manager_id: int, job_count: int = 1) -> TrackerState:
        """Starts a run of ``job_count`` jobs owned by ``manager_id``, or joins it; returns the new state.

        Every job of a run may call this: a tracker already owned by ``manager_id`` is left unchanged,
        including a run that already failed (the failure stays) or completed.

        Raises:
            TrackerOwnershipError: another manager's run is running.
            TrackerCorruptError, TrackerLockTimeout: as for :meth:`read`.
        """
        return self._update(
            lambda state, now: start_run(state, manager_id, job_count, now=now, path=self._path)
        )

    def stop(self, manager_id: int, job: str | None = None) -> TrackerState:
        """Records that ``job`` of ``manager_id``'s run completed; returns the new state.

        ``job`` defaults to the Slurm identity of this process (``<array>_<task>`` or the job id). A job
        that reports twice counts once. A complete run is left unchanged; a failed run records the
        completion and stays failed, so a late completion cannot hide a failure. Ownership is checked
        against the recorded manager id even when the run is no longer running: another id always gets
        :class:`TrackerOwnershipError`.

        Raises:
            TrackerError: no ``job`` was given and this process is not a Slurm job, or no run is active.
            TrackerOwnershipError: the tracker belongs to another manager's run.
            TrackerCorruptError, TrackerLockTimeout: as for :meth:`read`.
        """
        identity = job if job is not None else self._job_from_env()
        if identity is None:
            raise TrackerError(
                f"Cannot record a completion in tracker {self._path} because no job identity is known: "
                "pass the job explicitly or call it from inside a Slurm job (SLURM_JOB_ID is not set).",
                path=self._path,
            )
        return self._update(
            lambda state, now: record_completion(state, manager_id, identity, now=now, path=self._path)
        )

    def error(self, manager_id: int, job: str | None = None, reason: str = "") -> TrackerState:
        """Marks ``manager_id``'s run failed by ``job`` for ``reason``; returns the new state.

        The run stops running and keeps its first failure until an abort or a run of another manager.
        ``job`` defaults to the Slurm identity of this process, else ``unknown``: a failure is recorded
        even when the job cannot be named. A complete run, or a run that already failed, is left
        unchanged. Ownership is checked as for :meth:`stop`.

        Raises:
            TrackerError: no run is active.
            TrackerOwnershipError: the tracker belongs to another manager's run.
            TrackerCorruptError, TrackerLockTimeout: as for :meth:`read`.
        """
        identity = job if job is not None else (self._job_from_env() or UNKNOWN_JOB)
        return self._update(
            lambda state, now: record_failure(state, manager_id, identity, reason, now=now, path=self._path)
        )

    def retry(self, manager_id: int, job: str, attempt: int) -> TrackerState:
        """The owning manager retries ``job`` as attempt ``attempt``: the job's failure (if any) moves into
        the tracker's retry history, so that the attempt can report; returns the new state.

        Raises:
            TrackerError: no run is active, or the run's failure is another job's (a retry never clears
                a sibling's failure).
            TrackerOwnershipError: the tracker belongs to another manager's run.
            TrackerCorruptError, TrackerLockTimeout: as for :meth:`read`.
        """
        return self._update(
            lambda state, now: record_retry(state, manager_id, job, attempt, now=now, path=self._path)
        )

    def abort(self) -> TrackerState:
        """Resets the tracker to idle, whoever calls it and whatever the file holds; returns the old state.

        This is the emergency unlock. A corrupt file is reset too (its content is logged as a warning,
        and the idle state is returned for it).

        Raises:
            TrackerLockTimeout: the lock could not be had in time.
        """
        with self._os_errors("reset"):
            self._path.parent.mkdir(parents=True, exist_ok=True)
            previous = self._reset()
        _LOG.info("Aborted tracker %s (was %s, manager %s).", self._path, previous.phase, previous.manager_id)
        return previous

    def _reset(self) -> TrackerState:
        self._align_lock_mode()
        with self._lock:
            try:
                previous = self._load()
            except TrackerCorruptError as exc:
                _LOG.warning("Resetting a corrupt tracker: %s", exc)
                previous = IDLE_STATE
            self._write(IDLE_STATE)
        return previous

    def _update(self, transition: Callable[[TrackerState, str], TrackerState]) -> TrackerState:
        with self._os_errors("update"):
            self._path.parent.mkdir(parents=True, exist_ok=True)
            return self._apply(transition)

    def _apply(self, transition: Callable[[TrackerState, str], TrackerState]) -> TrackerState:
        self._align_lock_mode()
        with self._lock:
            state = self._load()
            updated = transition(state, self._clock())
            if updated != state:
                self._write(updated)
        return updated

    @contextmanager
    def _os_errors(self, action: str) -> Iterator[None]:
        """Translates file-system errors into a TrackerError naming the file (ours pass through)."""
        try:
            yield
        except SlPipelinesError:
            raise
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            raise TrackerError(
                f"Cannot {action} tracker {self._path} because {exc.strerror or exc}{where}: "
                "check that its folder exists and that you may write to it.",
                path=self._path,
            ) from exc

    def _align_lock_mode(self) -> None:
        """Gives a lasting lock file the tracker's permissions: whoever may write the tracker may lock it.

        A tracker made group-writable for a lab keeps that mode across rewrites; without this its lock
        file would keep the creator's umask and lock the rest of the group out.
        """
        if self._lock.kind is LockKind.SOFT:  # a soft lock file is made and removed on each use
            return
        try:
            mode = self._path.stat().st_mode & 0o777
        except FileNotFoundError:
            return
        try:
            info = self.lock_path.stat()
        except FileNotFoundError:
            with contextlib.suppress(FileExistsError):
                fd = os.open(self.lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
                try:
                    os.fchmod(fd, mode)  # the umask does not decide
                finally:
                    os.close(fd)
            return
        if info.st_mode & 0o777 != mode and info.st_uid == os.geteuid():
            os.chmod(self.lock_path, mode)

    def _job_from_env(self) -> str | None:
        return job_identity_from_env(os.environ if self._environ is None else self._environ)

    def _load(self) -> TrackerState:
        try:
            text = self._path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return IDLE_STATE
        except UnicodeDecodeError as exc:
            raise TrackerCorruptError(
                f"Tracker file {self._path} is corrupt because it is not UTF-8 text; "
                f"reset it with 'sl-tracker abort {self._path}'.",
                path=self._path,
            ) from exc
        return parse_tracker_text(text, path=self._path)

    def _write(self, state: TrackerState) -> None:
        data = dump_tracker_text(state).encode("utf-8")
        temp = self._path.with_name(f".{self._path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _NEW_FILE_MODE)
        try:
            with os.fdopen(fd, "wb") as stream:
                _keep_mode(fd, self._path)
                stream.write(data)
                stream.flush()
                os.fsync(fd)
            os.replace(temp, self._path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        _fsync_folder(self._path.parent)


def _keep_mode(fd: int, path: Path) -> None:
    """Gives the new file the permissions of the file it replaces, so a group keeps its access."""
    if not hasattr(os, "fchmod"):  # Windows keeps the folder's ACL instead
        return
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        return
    os.fchmod(fd, mode)


def _fsync_folder(folder: Path) -> None:
    """Makes the rename durable: without it a crash may bring back the old file."""
    if not hasattr(os, "O_DIRECTORY"):  # Windows cannot open a folder
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
