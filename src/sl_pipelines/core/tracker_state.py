"""The processing tracker as a value: its state and its transitions. No I/O (its YAML form: tracker_text).

A tracker belongs to one *run* of a pipeline, identified by the manager id that started it. The jobs of
the run report into it: ``start`` (every job may call it), ``stop`` (one completion per job identity) and
``error`` (the run failed). The state is derived from recorded facts rather than stored as flags, so it
cannot contradict itself:

* idle: no manager id;
* running: a manager id, no failure, fewer completions than jobs;
* complete: a manager id, no failure, one completion per job;
* failed: a manager id and a failure.

A manager id names one run: once that run is complete or failed, the same id cannot start it again,
so a late or requeued sibling job never erases the run's outcome. A new run needs a new manager id
(or an abort first).

Retries: only the owning manager can clear a failure, and only that of the one job it retries
(``record_retry``): the failure moves into the tracker's ``retries`` history, so the job's next attempt
can report. A sibling never erases a failure. Completions keep being recorded while the run is failed
(the phase stays failed), so the siblings that finished while a job waited for its retry still count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import PurePath

from sl_pipelines.errors import TrackerError, TrackerOwnershipError

#: Longest failure reason kept; a tracker records a short reason, the job log holds the rest.
MAX_REASON_LENGTH = 500
#: The job identity recorded for a failure reported from outside Slurm without an explicit job.
UNKNOWN_JOB = "unknown"
#: The highest manager id: ids are unsigned 64-bit integers.
MAX_MANAGER_ID = 2**64 - 1


class TrackerPhase(StrEnum):
    """Where a tracker stands, derived from its recorded facts."""

    IDLE = "idle"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"


@dataclass(frozen=True)
class TrackerFailure:
    """The first failure reported by a job of the run.

    Attributes:
        job: identity of the job that failed (``<array>_<task>``, a Slurm job id, or a caller's name).
        reason: a short reason, at most :data:`MAX_REASON_LENGTH` characters.
        at: when the failure was recorded, as an ISO 8601 UTC timestamp.
    """

    job: str
    reason: str
    at: str


@dataclass(frozen=True)
class TrackerRetry:
    """A retry the owning manager recorded: job ``job`` runs again as attempt ``attempt``.

    Attributes:
        job: the job's identity in the run.
        attempt: the number of the attempt that now runs (2 for the first retry).
        reason: the failure the job had recorded ("" when it died before it could record one).
        at: when the retry was recorded (ISO 8601 UTC).
    """

    job: str
    attempt: int
    reason: str
    at: str

    def as_dict(self) -> dict[str, str | int]:
        """The retry as the tracker's YAML and ``sl-tracker status --json`` show it."""
        return {"job": self.job, "attempt": self.attempt, "reason": self.reason, "at": self.at}


@dataclass(frozen=True)
class TrackerState:
    """One snapshot of a processing tracker.

    Attributes:
        manager_id: the manager id of the current (or last) run; None when the tracker is idle.
        job_count: how many distinct jobs must complete for the run to be complete.
        completed_jobs: sorted identities of the jobs that reported completion, each once.
        failure: the run's failure, or None.
        started_at: when the run started (ISO 8601 UTC), or None when idle.
        updated_at: when the tracker last changed (ISO 8601 UTC), or None when idle.
        retries: the retries the manager recorded, in order (see :func:`record_retry`).
    """

    manager_id: int | None = None
    job_count: int = 1
    completed_jobs: tuple[str, ...] = ()
    failure: TrackerFailure | None = None
    started_at: str | None = None
    updated_at: str | None = None
    retries: tuple[TrackerRetry, ...] = ()

    @property
    def phase(self) -> TrackerPhase:
        """The phase derived from the recorded facts."""
        if self.manager_id is None:
            return TrackerPhase.IDLE
        if self.failure is not None:
            return TrackerPhase.FAILED
        if len(self.completed_jobs) >= self.job_count:
            return TrackerPhase.COMPLETE
        return TrackerPhase.RUNNING

    @property
    def is_running(self) -> bool:
        """True while a run holds the tracker: started, not failed, not all jobs completed."""
        return self.phase is TrackerPhase.RUNNING

    @property
    def is_complete(self) -> bool:
        """True once every job of the run reported completion and none reported a failure."""
        return self.phase is TrackerPhase.COMPLETE

    @property
    def encountered_error(self) -> bool:
        """True once any job of the run reported a failure; only abort or a new run clears it."""
        return self.phase is TrackerPhase.FAILED


#: The state of a tracker that was never started, or was aborted.
IDLE_STATE = TrackerState()


def utc_now() -> str:
    """Returns the current UTC time as an ISO 8601 string with microseconds, for tracker timestamps."""
    return datetime.now(tz=UTC).isoformat(timespec="microseconds")


def job_identity_from_env(environ: Mapping[str, str]) -> str | None:
    """Returns the identity of the Slurm job this process runs in, or None outside Slurm.

    An array task is ``<SLURM_ARRAY_JOB_ID>_<SLURM_ARRAY_TASK_ID>`` (stable across requeues of the
    task); any other job is its ``SLURM_JOB_ID``.
    """
    array_id = environ.get("SLURM_ARRAY_JOB_ID", "").strip()
    task_id = environ.get("SLURM_ARRAY_TASK_ID", "").strip()
    if array_id and task_id:
        return f"{array_id}_{task_id}"
    job_id = environ.get("SLURM_JOB_ID", "").strip()
    return job_id or None


def start_run(
    state: TrackerState, manager_id: int, job_count: int, *, now: str, path: PurePath
) -> TrackerState:
    """Returns the state after a job of manager ``manager_id``'s run calls ``start``.

    * Idle, or the previous run of another manager finished (complete or failed): a fresh run owned by
      ``manager_id`` with ``job_count`` jobs; completions and failure are cleared.
    * Owned by the same manager: unchanged, whatever its phase. Every job of a run calls ``start``, and a
      late sibling must neither erase the run's failure nor reopen a complete run.
    * Running under another manager: :class:`TrackerOwnershipError`.

    Raises:
        TrackerOwnershipError: another manager's run holds the tracker.
        TrackerError: ``manager_id`` or ``job_count`` is out of range.
    """
    _check_manager_id(manager_id, path)
    if job_count < 1:
        raise TrackerError(
            f"Cannot start tracker {path} with job_count={job_count}: a run needs at least one job.",
            path=path,
        )
    if state.manager_id == manager_id:
        return state
    if state.is_running:
        raise _ownership_error(state, manager_id, path)
    return TrackerState(manager_id=manager_id, job_count=job_count, started_at=now, updated_at=now)


def record_completion(
    state: TrackerState, manager_id: int, job: str, *, now: str, path: PurePath
) -> TrackerState:
    """Returns the state after job ``job`` of manager ``manager_id``'s run reports completion.

    Completions are recorded by job identity, so a job that reports twice counts once. A complete run is
    left unchanged; a failed run records the completion but stays failed (its phase is derived from the
    failure), so a late completion cannot turn a failed run into a complete one, and a sibling that
    finished while another job waits for its retry still counts once that retry clears the failure.
    Ownership is checked against the recorded manager id in every phase, so a
    different manager gets an error even after the run finished.

    Raises:
        TrackerOwnershipError: the tracker belongs to another manager's run.
        TrackerError: the tracker is idle (never started, or aborted), or ``job`` is empty.
    """
    _check_owner(state, manager_id, path, action=f"report completion of job {job!r}")
    if not job.strip():
        raise TrackerError(f"Cannot record a completion in tracker {path} without a job identity.", path=path)
    if state.is_complete or job in state.completed_jobs or len(state.completed_jobs) >= state.job_count:
        return state
    completed = tuple(sorted((*state.completed_jobs, job)))
    return replace(state, completed_jobs=completed, updated_at=now)


def record_failure(
    state: TrackerState, manager_id: int, job: str, reason: str, *, now: str, path: PurePath
) -> TrackerState:
    """Returns the state after job ``job`` of manager ``manager_id``'s run reports a failure.

    The run stops running and keeps the failure until an abort or a new run. Only the first failure is
    kept (it is the likeliest cause); a failure reported after the run completed is ignored, because
    every job had already reported success. Ownership is checked against the recorded manager id in
    every phase.

    Raises:
        TrackerOwnershipError: the tracker belongs to another manager's run.
        TrackerError: the tracker is idle (never started, or aborted).
    """
    _check_owner(state, manager_id, path, action=f"report a failure of job {job!r}")
    if not state.is_running:
        return state
    short = " ".join(reason.split())[:MAX_REASON_LENGTH]
    failure = TrackerFailure(job=job.strip() or UNKNOWN_JOB, reason=short, at=now)
    return replace(state, failure=failure, updated_at=now)


def record_retry(
    state: TrackerState, manager_id: int, job: str, attempt: int, *, now: str, path: PurePath
) -> TrackerState:
    """Returns the state after the owning manager retries job ``job`` as attempt ``attempt``.

    The job's failure (if it recorded one) moves into the ``retries`` history and the run runs again.
    Recording the same retry twice changes nothing (a manager that restarts may repeat it).

    Raises:
        TrackerOwnershipError: the tracker belongs to another manager's run.
        TrackerError: the tracker is idle, ``attempt`` is below 2, or the run's failure is another job's:
            a retry never erases a sibling's failure.
    """
    _check_owner(state, manager_id, path, action=f"retry job {job!r}")
    if attempt < 2 or not job.strip():
        raise TrackerError(f"Cannot retry job {job!r} as attempt {attempt} in tracker {path}.", path=path)
    if any(r.job == job and r.attempt == attempt for r in state.retries):
        return state
    failure = state.failure
    if failure is not None and failure.job != job:
        raise TrackerError(
            f"Tracker {path} holds the failure of job {failure.job}, not of {job}: retrying {job} "
            "cannot clear another job's failure.",
            path=path,
        )
    entry = TrackerRetry(job=job, attempt=attempt, reason=failure.reason if failure else "", at=now)
    return replace(state, failure=None, retries=(*state.retries, entry), updated_at=now)


def _check_manager_id(manager_id: int, path: PurePath) -> None:
    if isinstance(manager_id, bool) or not 0 <= manager_id <= MAX_MANAGER_ID:
        raise TrackerError(
            f"Manager id {manager_id!r} for tracker {path} is not an unsigned 64-bit integer: "
            "use the id from generate_manager_id().",
            path=path,
        )


def _check_owner(state: TrackerState, manager_id: int, path: PurePath, *, action: str) -> None:
    _check_manager_id(manager_id, path)
    if state.manager_id is None:
        raise TrackerError(
            f"Manager {manager_id} cannot {action} in tracker {path} because no run is active "
            "(it was never started or was aborted): call start first.",
            path=path,
        )
    if state.manager_id != manager_id:
        raise _ownership_error(state, manager_id, path)


def _ownership_error(state: TrackerState, manager_id: int, path: PurePath) -> TrackerOwnershipError:
    owner = state.manager_id if state.manager_id is not None else -1
    return TrackerOwnershipError(
        f"Tracker {path} belongs to the {state.phase.value} run of manager {owner}, "
        f"not to manager {manager_id}: wait for that run, "
        f"or reset the tracker with 'sl-tracker abort {path}' if it is stuck.",
        path=path,
        owner=owner,
        caller=manager_id,
    )
