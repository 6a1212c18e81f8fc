"""The local run journal: what a manager needs to reattach to a run after a crash.

One JSON file per run, in the user data folder (``platformdirs.user_data_dir("sl_pipelines")/runs``,
or ``$SL_PIPELINES_DATA_DIR/runs``). It is written atomically BEFORE every submission (the intent) and
after it (the job ids), so a restarted manager rebuilds the same pipeline (same manager id, same run
token, same job names) and finds what was already submitted by name.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import getpass
import json
import os
import resource
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import platformdirs

from sl_pipelines.errors import JournalError, RunLockedError


def data_dir() -> Path:
    """The user data folder of sl_pipelines (journals, local tracker copies)."""
    override = os.environ.get("SL_PIPELINES_DATA_DIR")
    return Path(override) if override else Path(platformdirs.user_data_dir("sl_pipelines", appauthor=False))


def runs_dir() -> Path:
    """Where run journals live."""
    return data_dir() / "runs"


@dataclass(frozen=True)
class RunJournal:
    """The durable record of one pipeline run.

    Attributes:
        token: the run token (also the file name).
        pipeline: the pipeline's short name.
        backend: the profile name of the server, or ``local``.
        sessions: ``project/animal/session`` of every session of the run.
        manager_id: the owning manager id.
        parameters: the parameter values the pipeline was resolved with.
        configs_dir: the folder the definition was loaded from.
        keep_job_logs: whether job folders are kept on success.
        stage: the last stage whose submission was started (0 before any).
        job_ids: job name → Slurm job id, for every job known to be submitted.
        status: the pipeline status name (RUNNING, SUCCEEDED, FAILED, ABORTED).
        reason: the failure or abort reason.
        updated_at: when the journal was last written (UTC, ISO 8601).
        definition: the pipeline definition's YAML text, so that any PC can rebuild the run exactly.
        started_by: who started the run: user, host, pid and time.
        mode: ``attached`` (a manager drives the run) or ``detached`` (the cluster carries it).
        tracker: the run's tracker file on the server.
        attempts: job name → its attempts in order (retried jobs only): attempt, job id, state, reason,
            memory_gb, time_limit_minutes, submitted_at.
        usage: Slurm job id → what that job (one attempt) used: name, attempt, state, node, submitted_at,
            started_at, ended_at, queue_wait_s, elapsed_s, cpu_s, cpus, cpu_efficiency, max_rss_mb,
            requested_memory_mb, time_limit_minutes, and its source (``sacct`` or ``job``). A figure the
            source did not give is left out.

    The same JSON is the run's record on the server (``<working_root>/sl_jobs/<token>/run.json``);
    the file in the user data folder is this PC's cache of it.
    """

    token: str
    pipeline: str
    backend: str
    sessions: tuple[str, ...]
    manager_id: int
    parameters: dict[str, Any]
    configs_dir: str
    keep_job_logs: bool = False
    stage: int = 0
    job_ids: dict[str, str] = field(default_factory=dict)
    status: str = "RUNNING"
    reason: str = ""
    updated_at: str = ""
    definition: str = ""
    started_by: dict[str, str] = field(default_factory=dict)
    mode: str = "attached"
    tracker: str = ""
    attempts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    usage: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        """The journal file."""
        return runs_dir() / f"{self.token}.json"

    def save(self, **changes: Any) -> RunJournal:
        """Writes the journal with the given changes atomically and returns the new journal."""
        updated = replace(self, **changes, updated_at=datetime.now(tz=UTC).isoformat(timespec="seconds"))
        folder = runs_dir()
        folder.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=folder, prefix=f".{self.token}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(updated.to_json())
                stream.flush()
                os.fsync(stream.fileno())
            Path(temp).replace(updated.path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return updated

    def to_json(self) -> str:
        """The journal (or run record) as JSON text."""
        data = asdict(self)
        data["sessions"] = list(self.sessions)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, *, where: str) -> RunJournal:
        """Reads a journal or run record.

        Raises:
            JournalError: not a run journal; the message names ``where``.
        """
        try:
            data = json.loads(text)
            data["sessions"] = tuple(data["sessions"])
            return cls(**data)
        except (ValueError, KeyError, TypeError) as exc:
            raise JournalError(
                f"Run record {where} is unreadable ({exc}); delete it to forget that run.", path=where
            ) from exc

    @classmethod
    def load(cls, path: Path) -> RunJournal:
        """Reads a journal file.

        Raises:
            JournalError: the file is missing or not a journal; the message names the file.
        """
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise JournalError(
                f"Run journal {path} is unreadable ({exc}); delete it to forget that run.", path=path
            ) from exc
        return cls.from_json(text, where=str(path))


def iter_journals() -> Iterator[RunJournal]:
    """Every readable journal, newest first (unreadable files are skipped and logged)."""
    folder = runs_dir()
    if not folder.is_dir():
        return
    files = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in files:
        try:
            yield RunJournal.load(path)
        except JournalError:
            continue


def unfinished_records(
    records: Mapping[Any, str], pipeline: str, sessions: tuple[str, ...]
) -> list[RunJournal]:
    """The unfinished runs of this pipeline on these sessions among run records (newest first)."""
    found = []
    for where, text in records.items():
        try:
            record = RunJournal.from_json(text, where=str(where))
        except JournalError:
            continue
        if record.pipeline == pipeline and record.sessions == sessions and record.status == "RUNNING":
            found.append(record)
    return sorted(found, key=lambda r: r.updated_at, reverse=True)


def find_unfinished(pipeline: str, backend: str, sessions: tuple[str, ...]) -> RunJournal | None:
    """The newest unfinished run of this pipeline on these sessions and this backend, if any."""
    for journal in iter_journals():
        same = journal.pipeline == pipeline and journal.backend == backend and journal.sessions == sessions
        if same and journal.status == "RUNNING":
            return journal
    return None


def _holder(handle: Any) -> str:
    """Who holds a run lock: its file's text, which the holder writes right after it locked the file."""
    for _ in range(20):
        handle.seek(0)
        text = str(handle.read()).strip()
        if text:
            return text
        time.sleep(0.1)
    return "another manager"


def _allow_more_open_files() -> bool:
    """Raises this process's soft limit on open files to its hard limit; True when it grew.

    Each run a manager drives holds its lock file open, so a thousand runs need a thousand descriptors;
    a common soft limit is 1,024 while the hard limit is far higher.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return False
        return True
    return False


@functools.cache
def _allow_many_runs() -> None:
    """Once per process: the open-files soft limit raised to the hard one (see ``_allow_more_open_files``)."""
    _allow_more_open_files()


@functools.cache
def _whoami() -> str:
    """``user on host`` (asked once: later, with many files open, even the user lookup could fail)."""
    return f"{getpass.getuser()} on {socket.gethostname()}"


def _open_lock_file(path: Path) -> Any:
    """Opens a run's lock file, or says plainly that this process has too many files open."""
    _allow_many_runs()
    try:
        return path.open("a+", encoding="utf-8")
    except OSError as error:
        if error.errno != errno.EMFILE:
            raise
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        raise JournalError(
            f"Cannot open {path}: this process has {limit} files open, its limit; each run driven at "
            "once holds one, so drive fewer runs per manager or raise the limit (`ulimit -n` before "
            "starting it).",
            path=path,
        ) from None


class RunLock:
    """Makes sure one manager process at a time drives a run on this PC.

    An exclusive, non-blocking ``flock`` on ``<runs>/<token>.lock``, held while the run is driven; the
    file says who holds it (pid, host, user, since when). The operating system releases it when the
    holder exits, however it exits, so a crashed manager never leaves it stuck.
    """

    def __init__(self, token: str) -> None:
        self.token = token
        self.path = runs_dir() / f"{token}.lock"
        self._file: Any = None

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._file is not None

    def acquire(self) -> None:
        """Takes the lock, or refuses naming the manager that holds it.

        Raises:
            RunLockedError: another manager process (or another object in this one) drives the run.
        """
        if self._file is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = _open_lock_file(self.path)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(handle)
            handle.close()
            raise RunLockedError(
                f"Run {self.token} is already driven by {holder}; watch that manager or stop it first "
                "(two managers driving one run would submit its stages twice).",
                token=self.token,
                holder=holder,
            ) from None
        handle.seek(0)
        handle.truncate()
        since = datetime.now(tz=UTC).isoformat(timespec="seconds")
        handle.write(f"pid {os.getpid()} of {_whoami()} since {since}")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        """Lets the run go (the file stays; its content is stale once nobody holds the lock)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __del__(self) -> None:
        self.release()
