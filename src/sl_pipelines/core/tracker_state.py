"""The processing tracker as a value: its state, its transitions and its YAML form. No I/O.

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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import PurePath
from typing import TypeVar

import yaml

from sl_pipelines.errors import TrackerCorruptError, TrackerError, TrackerOwnershipError

_T = TypeVar("_T")
# libyaml's loader and dumper are ~10x faster; a tracker is parsed on every update under the lock.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

#: Version of the YAML layout written by :func:`dump_tracker_text`.
FORMAT_VERSION = 1
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
class TrackerState:
    """One snapshot of a processing tracker.

    Attributes:
        manager_id: the manager id of the current (or last) run; None when the tracker is idle.
        job_count: how many distinct jobs must complete for the run to be complete.
        completed_jobs: sorted identities of the jobs that reported completion, each once.
        failure: the run's failure, or None.
        started_at: when the run started (ISO 8601 UTC), or None when idle.
        updated_at: when the tracker last changed (ISO 8601 UTC), or None when idle.
    """

    manager_id: int | None = None
    job_count: int = 1
    completed_jobs: tuple[str, ...] = ()
    failure: TrackerFailure | None = None
    started_at: str | None = None
    updated_at: str | None = None

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

    Completions are recorded by job identity, so a job that reports twice counts once. A run that is no
    longer running (complete or failed) is left unchanged: a late completion cannot turn a failed run
    into a complete one. Ownership is checked against the recorded manager id in every phase, so a
    different manager gets an error even after the run finished.

    Raises:
        TrackerOwnershipError: the tracker belongs to another manager's run.
        TrackerError: the tracker is idle (never started, or aborted), or ``job`` is empty.
    """
    _check_owner(state, manager_id, path, action=f"report completion of job {job!r}")
    if not job.strip():
        raise TrackerError(f"Cannot record a completion in tracker {path} without a job identity.", path=path)
    if not state.is_running or job in state.completed_jobs:
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


_HEADER = "# sl_pipelines processing tracker. Do not edit by hand while a run is active; use sl-tracker.\n"
_KEYS = (
    "format",
    "status",
    "manager_id",
    "job_count",
    "completed_jobs",
    "failure",
    "started_at",
    "updated_at",
)
_FAILURE_KEYS = ("job", "reason", "at")


def dump_tracker_text(state: TrackerState) -> str:
    """Returns the YAML document for ``state``: a comment header, then one key per fact.

    ``status`` is written for the people who read the file; it is derived, and checked on parsing.
    """
    failure = None
    if state.failure is not None:
        failure = {"job": state.failure.job, "reason": state.failure.reason, "at": state.failure.at}
    document = {
        "format": FORMAT_VERSION,
        "status": state.phase.value,
        "manager_id": state.manager_id,
        "job_count": state.job_count,
        "completed_jobs": list(state.completed_jobs),
        "failure": failure,
        "started_at": state.started_at,
        "updated_at": state.updated_at,
    }
    body = yaml.dump(document, Dumper=_DUMPER, sort_keys=False, default_flow_style=False, allow_unicode=True)
    return _HEADER + body


def parse_tracker_text(text: str, *, path: PurePath) -> TrackerState:
    """Returns the state held by the YAML document ``text`` read from ``path``.

    Raises:
        TrackerCorruptError: the text is not YAML, not a mapping, has missing or unknown keys, a value of
            the wrong type, or values that contradict each other; the message names ``path`` and the fault.
    """
    data = _load_mapping(text, path)
    missing = [key for key in _KEYS if key not in data]
    unknown = sorted(str(key) for key in data if key not in _KEYS)
    if missing or unknown:
        raise _corrupt(path, _describe_keys(missing, unknown))
    version = _typed(data, "format", int, path)
    if version != FORMAT_VERSION:
        raise _corrupt(path, f"it has format {version!r}, but this version of sl_pipelines reads format 1")
    state = TrackerState(
        manager_id=_manager_id(data, path),
        job_count=_job_count(data, path),
        completed_jobs=_completed_jobs(data, path),
        failure=_failure(data, path),
        started_at=_timestamp(data, "started_at", path),
        updated_at=_timestamp(data, "updated_at", path),
    )
    _check_consistent(state, str(data["status"]), path)
    return state


def _load_mapping(text: str, path: PurePath) -> dict[object, object]:
    try:
        data = yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader (libyaml's when available)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise _corrupt(path, f"it is not valid YAML ({problem}{where})") from exc
    if data is None:
        raise _corrupt(path, "it is empty (no YAML document, at most comments)")
    if not isinstance(data, dict):
        raise _corrupt(path, f"it holds {_kind(data)} instead of a mapping of tracker fields")
    return data


def _describe_keys(missing: list[str], unknown: list[str]) -> str:
    parts = []
    if missing:
        parts.append(f"it lacks the key(s) {', '.join(missing)}")
    if unknown:
        parts.append(f"it has the unknown key(s) {', '.join(unknown)}")
    return " and ".join(parts)


def _typed(data: Mapping[object, object], key: str, kind: type[_T], path: PurePath) -> _T:
    value = data[key]
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        raise _corrupt(path, f"{key} is {_kind(value)} {value!r} instead of {kind.__name__}")
    return value


def _manager_id(data: Mapping[object, object], path: PurePath) -> int | None:
    if data["manager_id"] is None:
        return None
    value = _typed(data, "manager_id", int, path)
    if not 0 <= value <= MAX_MANAGER_ID:
        raise _corrupt(path, f"manager_id {value} is not an unsigned 64-bit integer")
    return value


def _job_count(data: Mapping[object, object], path: PurePath) -> int:
    value = _typed(data, "job_count", int, path)
    if value < 1:
        raise _corrupt(path, f"job_count is {value}, but a run has at least one job")
    return value


def _completed_jobs(data: Mapping[object, object], path: PurePath) -> tuple[str, ...]:
    value = _typed(data, "completed_jobs", list, path)
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise _corrupt(path, f"completed_jobs holds {_kind(item)} {item!r} instead of a quoted job id")
    if len(set(value)) != len(value):
        raise _corrupt(path, "completed_jobs lists a job more than once")
    return tuple(sorted(value))


def _failure(data: Mapping[object, object], path: PurePath) -> TrackerFailure | None:
    value = data["failure"]
    if value is None:
        return None
    if not isinstance(value, dict) or sorted(value) != sorted(_FAILURE_KEYS):
        raise _corrupt(path, f"failure is {value!r} instead of null or a mapping with job, reason and at")
    for key in _FAILURE_KEYS:
        if not isinstance(value[key], str):
            raise _corrupt(path, f"failure {key} is {_kind(value[key])} {value[key]!r} instead of str")
    _check_iso(value["at"], "failure at", path)
    return TrackerFailure(job=value["job"], reason=value["reason"], at=value["at"])


def _timestamp(data: Mapping[object, object], key: str, path: PurePath) -> str | None:
    value = data[key]
    if value is None:
        return None
    if isinstance(value, datetime):  # an unquoted timestamp typed in by hand
        return value.isoformat()
    if not isinstance(value, str):
        raise _corrupt(path, f"{key} is {_kind(value)} {value!r} instead of an ISO 8601 timestamp")
    _check_iso(value, key, path)
    return value


def _check_iso(value: str, key: str, path: PurePath) -> None:
    try:
        datetime.fromisoformat(value)
    except ValueError as exc:
        raise _corrupt(path, f"{key} {value!r} is not an ISO 8601 timestamp") from exc


def _check_consistent(state: TrackerState, status: str, path: PurePath) -> None:
    if len(state.completed_jobs) > state.job_count:
        raise _corrupt(
            path, f"it lists {len(state.completed_jobs)} completed jobs for job_count {state.job_count}"
        )
    if state.manager_id is None and (state.completed_jobs or state.failure or state.started_at):
        raise _corrupt(path, "it records completions, a failure or a start time but no manager_id")
    if state.manager_id is not None and state.started_at is None:
        raise _corrupt(path, f"it names manager {state.manager_id} but has no started_at")
    if status != state.phase.value:
        raise _corrupt(path, f"its status says {status!r} but its fields say {state.phase.value!r}")


def _kind(value: object) -> str:
    if value is None:
        return "null"
    name = type(value).__name__
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


def _corrupt(path: PurePath, problem: str) -> TrackerCorruptError:
    return TrackerCorruptError(
        f"Tracker file {path} is corrupt because {problem}; reset it with 'sl-tracker abort {path}'.",
        path=path,
    )
