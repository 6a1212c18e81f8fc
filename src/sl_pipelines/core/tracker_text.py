"""The YAML form of a processing tracker: written for people to read, parsed strictly. No I/O.

A document that is not a valid tracker (not YAML, not a mapping, a missing or unknown key, a wrong type,
facts that contradict each other) raises :class:`TrackerCorruptError` naming the file and the problem;
it is never silently reset.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import datetime
from pathlib import PurePath
from typing import TypeVar

import yaml

from sl_pipelines.core.tracker_state import MAX_MANAGER_ID, TrackerFailure, TrackerRetry, TrackerState
from sl_pipelines.errors import TrackerCorruptError

_T = TypeVar("_T")
# libyaml's loader and dumper are ~10x faster; a tracker is parsed on every update under the lock.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

#: Version of the YAML layout written by :func:`dump_tracker_text`.
FORMAT_VERSION = 1

#: Parsed tracker texts kept (a few MB at most): more than the runs one manager watches at once.
PARSED_TEXTS_KEPT = 4096

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
#: Written only when the run had retries, so trackers without retries stay readable by older versions.
_OPTIONAL_KEYS = ("retries",)
_RETRY_KEYS = ("job", "attempt", "reason", "at")


def dump_tracker_text(state: TrackerState) -> str:
    """Returns the YAML document for ``state``: a comment header, then one key per fact.

    ``status`` is written for the people who read the file; it is derived, and checked on parsing.
    """
    failure = None
    if state.failure is not None:
        failure = {"job": state.failure.job, "reason": state.failure.reason, "at": state.failure.at}
    document: dict[str, object] = {
        "format": FORMAT_VERSION,
        "status": state.phase.value,
        "manager_id": state.manager_id,
        "job_count": state.job_count,
        "completed_jobs": list(state.completed_jobs),
        "failure": failure,
        "started_at": state.started_at,
        "updated_at": state.updated_at,
    }
    if state.retries:
        document["retries"] = [retry.as_dict() for retry in state.retries]
    body = yaml.dump(document, Dumper=_DUMPER, sort_keys=False, default_flow_style=False, allow_unicode=True)
    return _HEADER + body


def parse_tracker_text(text: str, *, path: PurePath) -> TrackerState:
    """Returns the state held by the YAML document ``text`` read from ``path``.

    The same text always holds the same (immutable) state, so the states of recent texts are kept: a
    manager watching a thousand runs re-reads a thousand unchanged trackers every cycle. A corrupt text
    is never kept; it raises again, naming the path it was read from.

    Raises:
        TrackerCorruptError: the text is not YAML, not a mapping, has missing or unknown keys, a value of
            the wrong type, or values that contradict each other; the message names ``path`` and the fault.
    """
    return _parse_cached(text, path)


@functools.lru_cache(maxsize=PARSED_TEXTS_KEPT)
def _parse_cached(text: str, path: PurePath) -> TrackerState:
    data = _load_mapping(text, path)
    missing = [key for key in _KEYS if key not in data]
    unknown = sorted(str(key) for key in data if key not in _KEYS and key not in _OPTIONAL_KEYS)
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
        retries=_retries(data.get("retries", []), path),
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


def _retries(value: object, path: PurePath) -> tuple[TrackerRetry, ...]:
    if not isinstance(value, list):
        raise _corrupt(path, f"retries is {_kind(value)} instead of a list")
    retries = []
    for item in value:
        if not isinstance(item, dict) or sorted(item) != sorted(_RETRY_KEYS):
            raise _corrupt(path, f"retries holds {item!r} instead of a mapping with job, attempt, reason, at")
        attempt = item["attempt"]
        texts = (item["job"], item["reason"], item["at"])
        if not all(isinstance(v, str) for v in texts) or type(attempt) is not int:
            raise _corrupt(path, f"retries holds {item!r} with a value of the wrong type")
        _check_iso(item["at"], "retries at", path)
        retries.append(TrackerRetry(job=item["job"], attempt=attempt, reason=item["reason"], at=item["at"]))
    return tuple(retries)


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
