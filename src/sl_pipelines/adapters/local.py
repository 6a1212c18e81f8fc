"""The embedded local backend: the same pipelines and trackers, with jobs as local processes.

It implements the same ``Backend`` seam as the SSH ``Server``: jobs are bash scripts rendered exactly as
for Slurm, run by a tiny scheduler with bounded parallelism and time limits; files live under one local
folder (``storage/``, ``working/``, and the scheduler's state in ``.sl_local/``). Job processes run in
their own sessions, so they outlive a crashed manager just as Slurm jobs do, and their state is kept on
disk, so a restarted manager finds them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path, PurePosixPath

from filelock import FileLock

from sl_pipelines.adapters.lease_files import renew_leases, take_lease
from sl_pipelines.adapters.local_files import change_local_file, find_local_sessions, select_local_sessions
from sl_pipelines.adapters.local_jobs import JobRecord, alive, boot_id, process_stat, signal_group
from sl_pipelines.adapters.run_listing import collect_runs
from sl_pipelines.adapters.tracker_ops import apply_operations
from sl_pipelines.core.arrays import Submission
from sl_pipelines.core.file_changes import FileChange
from sl_pipelines.core.job import Environment, EnvironmentKind, Job, JobDefaults
from sl_pipelines.core.lease import LeaseOutcome, LeaseRequest
from sl_pipelines.core.retry import PartitionLimits
from sl_pipelines.core.seams import (
    ProbeRequest,
    ProbeResult,
    RunSnapshot,
    SubmissionReport,
    TrackerOperation,
    TrackerOutcome,
)
from sl_pipelines.core.selection import SessionTrackers
from sl_pipelines.core.session_query import FoundSession
from sl_pipelines.core.states import JobState, JobStatus
from sl_pipelines.core.usage import Measured, parse_job_usage

KILL_GRACE_SECONDS = 10.0
_GONE = "its process is gone: killed, or this computer restarted"
_WRAPPER = 'bash "$0" >"$1" 2>"$2"; echo $? >"$3"'
# Starts the wrapper detached in its own session (like a Slurm job, it outlives the manager) and
# prints its pid, which is also its process group id.
_LAUNCHER = 'setsid bash -c "$0" "$@" </dev/null >/dev/null 2>&1 & echo $!'


class LocalBackend:
    """Runs pipelines on this machine: bounded parallel local processes, files on the local disk.

    Args:
        root: the folder that holds ``storage/`` (raw data and trackers), ``working/`` (output and job
            folders) and ``.sl_local/`` (the scheduler's state).
        max_jobs: how many jobs may run at once (default: the number of CPUs, at least 2).
        environment: what job scripts activate (default: this Python's virtual environment).
    """

    def __init__(
        self, root: Path, *, max_jobs: int | None = None, environment: Environment | None = None
    ) -> None:
        self.root = root.resolve()
        self.max_jobs = max_jobs or max(2, os.cpu_count() or 2)
        self._environment = environment or _current_environment()
        self._state = self.root / ".sl_local"
        (self._state / "jobs").mkdir(parents=True, exist_ok=True)
        for folder in ("storage", "working"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(self._state / "scheduler.lock"), timeout=30)

    @property
    def name(self) -> str:
        """Always ``local``."""
        return "local"

    @property
    def storage_root(self) -> PurePosixPath:
        """``<root>/storage``."""
        return PurePosixPath(self.root / "storage")

    @property
    def working_root(self) -> PurePosixPath:
        """``<root>/working``."""
        return PurePosixPath(self.root / "working")

    @property
    def environment(self) -> Environment:
        """What job scripts activate."""
        return self._environment

    @property
    def job_exports(self) -> tuple[tuple[str, str], ...]:
        """Nothing beyond the defaults: local trackers use the plain file lock."""
        return ()

    @property
    def report_grace_seconds(self) -> float:
        """A job's tracker write is visible at once on the local disk."""
        return 0.0

    @property
    def job_defaults(self) -> JobDefaults:
        """None: local jobs have no partition, account, qos or gres."""
        return JobDefaults()

    # ------------------------------------------------------------------------------------------- jobs
    @property
    def max_array_size(self) -> int:
        """No limit of its own: an array's tasks are queued one by one."""
        return 1_000_000

    def partition_limits(self, partition: str | None) -> PartitionLimits:
        """None: local jobs have no partition, and no limits but the machine's."""
        return PartitionLimits()

    def submit_jobs(self, jobs: Sequence[Job | Submission]) -> SubmissionReport:
        """Writes each job's script into its folder and queues it; an array's tasks are queued under the
        array's name with ids ``<array>_<index>``. A script that cannot be written is refused with the
        reason (the other submissions go on)."""
        submitted: dict[str, str] = {}
        refused: dict[str, str] = {}
        with self._lock:
            for item in jobs:
                submission = item if isinstance(item, Submission) else Submission(item)
                try:
                    for job in submission.jobs:
                        Path(job.working_directory).mkdir(parents=True, exist_ok=True)
                        Path(job.script_path).write_text(job.render(), encoding="utf-8")
                except OSError as exc:
                    reason = f"Could not write job script {exc.filename}: {exc.strerror}"
                    refused.update(dict.fromkeys((job.name for job in submission.jobs), reason))
                    continue
                base = self._next_id()
                for name, job_id in submission.job_ids(base).items():
                    job = next(j for j in submission.jobs if j.name == name)
                    self._queue(job, job_id, submission.job.name)
                    submitted[name] = job_id
            self._schedule()
        return SubmissionReport(submitted=submitted, refused=refused)

    def _queue(self, job: Job, job_id: str, name: str) -> None:
        record = JobRecord(
            job_id=job_id,
            name=name,
            script=str(job.script_path),
            stdout=str(job.stdout_path),
            stderr=str(job.stderr_path),
            time_limit_s=job.resources.time_limit_minutes * 60.0,
            submitted=time.time(),
        )
        self._save(record)

    def cancel(self, job_ids: Sequence[str]) -> None:
        """Cancels queued or running jobs (finished ones are left as they are)."""
        with self._lock:
            for record in self._records():
                if record.job_id in job_ids and JobState(record.state).is_active:
                    self._stop(record, JobState.CANCELLED, "cancelled")
            self._schedule()

    def probe(self, request: ProbeRequest) -> ProbeResult:
        """Advances the scheduler, then reports the requested jobs and trackers (no remote round trip).

        A requested id the scheduler never had is NOT_FOUND, as on Slurm.
        """
        with self._lock:
            self._schedule()
            records = self._records()
        names, ids = set(request.job_names), set(request.job_ids)
        jobs = [
            JobStatus(r.job_id, r.name, JobState(r.state), r.exit_code, r.reason)
            for r in records
            if r.name in names or r.job_id in ids
        ]
        known = {status.job_id for status in jobs}
        jobs += [JobStatus(i, "", JobState.NOT_FOUND) for i in request.job_ids if i not in known]
        trackers: dict[PurePosixPath, str | None] = {}
        unreadable: dict[PurePosixPath, str] = {}
        for path in request.tracker_paths:
            try:
                trackers[path] = self.read_text(path)
            except OSError as exc:
                unreadable[path] = f"reading it failed ({exc.strerror or exc})"
        lost = renew_leases(request.leases)
        return ProbeResult(
            jobs=tuple(jobs),
            trackers=trackers,
            unreadable=unreadable,
            round_trips=0,
            lost_leases=lost,
            usage=self._usage(records, request.usage),
        )

    def _usage(
        self, records: Sequence[JobRecord], wanted: Sequence[tuple[str, PurePosixPath]]
    ) -> dict[str, Measured]:
        """What ended jobs used: times from the scheduler's records, CPU time and peak memory from the
        job's own usage file (local jobs are this machine's processes: there is no accounting)."""
        by_id = {record.job_id: record for record in records}
        found: dict[str, Measured] = {}
        for job_id, path in wanted:
            record = by_id.get(job_id)
            if record is None or not JobState(record.state).is_terminal:
                continue
            text = self.read_text(path)
            own = parse_job_usage(text) if text is not None else None
            elapsed = record.ended - record.started if record.ended and record.started else None
            found[job_id] = Measured(
                state=record.state,
                submitted_at=_iso(record.submitted),
                started_at=_iso(record.started),
                ended_at=_iso(record.ended),
                elapsed_s=elapsed,
                node=socket.gethostname(),
            ).filled_from(own)
        return found

    def status(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """The state of each job id (NOT_FOUND for ids the scheduler never had)."""
        found = {s.job_id: s for s in self.probe(ProbeRequest(job_ids=tuple(job_ids))).jobs}
        return {i: found.get(i, JobStatus(i, "", JobState.NOT_FOUND)) for i in job_ids}

    def update_trackers(self, operations: Sequence[TrackerOperation]) -> tuple[TrackerOutcome, ...]:
        """Applies tracker operations in-process, under each tracker's lock."""
        return apply_operations(operations)

    def take_leases(self, requests: Sequence[LeaseRequest]) -> tuple[LeaseOutcome, ...]:
        """Takes (or keeps) the leases of runs, each under a lock file."""
        return tuple(take_lease(request) for request in requests)

    def select_sessions(self, pattern: str) -> tuple[SessionTrackers, ...]:
        """The sessions a pattern names, with their trackers and session data."""
        return select_local_sessions(self.storage_root, self.working_root, pattern)

    def list_runs(self) -> tuple[RunSnapshot, ...]:
        """Every run recorded here, with its lease, tracker and jobs (read-only)."""
        return collect_runs(Path(self.working_root), self.probe)

    def find_sessions(self, specs: Sequence[str]) -> tuple[FoundSession, ...]:
        """Finds every session and reads its session data, with the same rules as the Server.

        Raises:
            SessionNotFoundError, ConfigurationError: the first spec that names no single session.
        """
        return find_local_sessions(self.storage_root, self.working_root, specs, self.name)

    # ------------------------------------------------------------------------------------------- files
    def read_files(self, folder: PurePosixPath, name: str) -> dict[PurePosixPath, str]:
        """The text of every ``<folder>/*/<name>`` (the runs' records)."""
        return {
            PurePosixPath(p): p.read_text(encoding="utf-8") for p in sorted(Path(folder).glob(f"*/{name}"))
        }

    def change_files(self, changes: Sequence[FileChange]) -> tuple[str, ...]:
        """Writes files atomically and removes paths (keeping the names asked for)."""
        return tuple(change_local_file(change) for change in changes)

    def read_text(self, path: PurePosixPath, *, tail_bytes: int | None = None) -> str | None:
        """A file's text (or its last ``tail_bytes``), or None when it does not exist."""
        try:
            with Path(path).open("rb") as stream:
                if tail_bytes is not None:
                    stream.seek(max(0, stream.seek(0, os.SEEK_END) - tail_bytes))
                return stream.read().decode("utf-8", errors="replace")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def list_dir(self, path: PurePosixPath) -> tuple[str, ...]:
        """Names in a folder (empty when it does not exist)."""
        try:
            return tuple(sorted(os.listdir(path)))
        except (FileNotFoundError, NotADirectoryError):
            return ()

    def remove(self, path: PurePosixPath) -> None:
        """Removes a file or a tree; a missing path is not an error."""
        target = Path(path)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)

    # ------------------------------------------------------------------------------------------- scheduler
    def _schedule(self) -> None:
        records = self._records()
        for record in records:
            if record.state == JobState.RUNNING.value:
                self._check(record)
        running = sum(1 for r in records if r.state == JobState.RUNNING.value)
        for record in records:
            if running >= self.max_jobs:
                break
            if record.state == JobState.PENDING.value:
                self._start(record)
                running += 1

    def _start(self, record: JobRecord) -> None:
        exit_file = self._state / "jobs" / f"{record.job_id}.exit"
        env = dict(os.environ, SLURM_JOB_ID=record.job_id, SLURM_JOB_NAME=record.name)
        if "_" in record.job_id:  # an array task, as Slurm describes it to the job
            base, task = record.job_id.split("_", 1)
            env.update(SLURM_ARRAY_JOB_ID=base, SLURM_ARRAY_TASK_ID=task)
        argv = [
            "bash",
            "-c",
            _LAUNCHER,
            _WRAPPER,
            record.script,
            record.stdout,
            record.stderr,
            str(exit_file),
        ]
        folder = Path(record.script).parent
        launched = subprocess.run(argv, env=env, cwd=folder, capture_output=True, text=True, check=True)
        record.state, record.pid, record.started = JobState.RUNNING.value, int(launched.stdout), time.time()
        found = process_stat(record.pid)
        record.boot_id, record.start_ticks = boot_id(), found[1] if found else None
        self._save(record)

    def _check(self, record: JobRecord) -> None:
        exit_file = self._state / "jobs" / f"{record.job_id}.exit"
        exit_text = _read_exit(exit_file)
        if not exit_text and not alive(record):
            # the job may have written its exit file and ended between the two looks: look again
            exit_text = _read_exit(exit_file)
            if not exit_text:
                record.state, record.reason, record.ended = JobState.FAILED.value, _GONE, time.time()
                self._save(record)
                return
        if exit_text:
            code = int(exit_text)
            record.exit_code = code
            record.state = JobState.COMPLETED.value if code == 0 else JobState.FAILED.value
            record.reason = "" if code == 0 else "NonZeroExitCode"
            record.ended = exit_file.stat().st_mtime  # when the job ended, not when this check saw it
            self._save(record)
            return
        if record.started is not None and time.time() - record.started > record.time_limit_s:
            self._stop(record, JobState.TIMEOUT, "TimeLimit")

    def _stop(self, record: JobRecord, state: JobState, reason: str) -> None:
        if alive(record):
            signal_group(record, signal.SIGTERM)
            deadline = time.time() + KILL_GRACE_SECONDS
            while alive(record) and time.time() < deadline:
                time.sleep(0.05)
            signal_group(record, signal.SIGKILL)
        record.state, record.reason, record.ended = state.value, reason, time.time()
        self._save(record)

    def _next_id(self) -> str:
        counter = self._state / "last_id"
        value = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(value))
        return str(value)

    def _records(self) -> list[JobRecord]:
        files = sorted(
            (self._state / "jobs").glob("*.json"), key=lambda p: tuple(int(n) for n in p.stem.split("_"))
        )
        return [JobRecord(**json.loads(path.read_text())) for path in files]

    def _save(self, record: JobRecord) -> None:
        path = self._state / "jobs" / f"{record.job_id}.json"
        temp = path.with_suffix(".tmp")
        temp.write_text(json.dumps(asdict(record)))
        temp.replace(path)


def _read_exit(path: Path) -> str:
    """The exit status a local job's wrapper wrote, or "" while it has written none."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


def _iso(stamp: float | None) -> str | None:
    return datetime.fromtimestamp(stamp).astimezone().isoformat(timespec="seconds") if stamp else None


def _current_environment() -> Environment:
    if sys.prefix != sys.base_prefix:
        return Environment(EnvironmentKind.VENV, sys.prefix)
    return Environment()
