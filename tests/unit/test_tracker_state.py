"""The tracker state machine and its YAML form: every transition and every corrupt input, as tables."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import Any

import pytest
import yaml

from sl_pipelines.core.tracker_state import (
    IDLE_STATE,
    MAX_REASON_LENGTH,
    TrackerFailure,
    TrackerPhase,
    TrackerRetry,
    TrackerState,
    job_identity_from_env,
    record_completion,
    record_failure,
    record_retry,
    start_run,
)
from sl_pipelines.core.tracker_text import dump_tracker_text, parse_tracker_text
from sl_pipelines.errors import TrackerCorruptError, TrackerError, TrackerOwnershipError

PATH = PurePosixPath("/storage/proj/A1/s1/tracking_data/behavior_processing_tracker.yaml")
T0 = "2026-01-01T10:00:00+00:00"
NOW = "2026-01-01T11:00:00+00:00"

RUNNING = TrackerState(manager_id=7, job_count=3, completed_jobs=("1_0",), started_at=T0, updated_at=T0)
ALMOST = replace(RUNNING, completed_jobs=("1_0", "1_1"))
COMPLETE = replace(RUNNING, completed_jobs=("1_0", "1_1", "1_2"))
FAILED = replace(RUNNING, failure=TrackerFailure(job="1_1", reason="boom", at=T0))
FRESH_8 = TrackerState(manager_id=8, job_count=2, started_at=NOW, updated_at=NOW)
RETRIED = replace(RUNNING, retries=(TrackerRetry("1_1", 2, "boom", NOW), TrackerRetry("1_1", 3, "", NOW)))


def _start(manager_id: int, job_count: int = 2) -> Callable[[TrackerState], TrackerState]:
    return lambda s: start_run(s, manager_id, job_count, now=NOW, path=PATH)


def _stop(manager_id: int, job: str) -> Callable[[TrackerState], TrackerState]:
    return lambda s: record_completion(s, manager_id, job, now=NOW, path=PATH)


def _error(manager_id: int, job: str, reason: str = "") -> Callable[[TrackerState], TrackerState]:
    return lambda s: record_failure(s, manager_id, job, reason, now=NOW, path=PATH)


def _retry(manager_id: int, job: str, attempt: int) -> Callable[[TrackerState], TrackerState]:
    return lambda s: record_retry(s, manager_id, job, attempt, now=NOW, path=PATH)


@dataclass(frozen=True)
class Case:
    """One transition: from ``before``, ``action`` gives ``after`` (a state) or raises ``after`` (a type)."""

    id: str
    before: TrackerState
    action: Callable[[TrackerState], TrackerState]
    after: TrackerState | type[Exception]


TRANSITIONS = [
    # start
    Case("start idle: fresh run", IDLE_STATE, _start(8), FRESH_8),
    Case("start same id while running: unchanged", RUNNING, _start(7, 99), RUNNING),
    Case("start other id while running: ownership", RUNNING, _start(8), TrackerOwnershipError),
    Case("start same id after failure: failure kept", FAILED, _start(7), FAILED),
    Case("start same id after completion: unchanged", COMPLETE, _start(7), COMPLETE),
    Case("start other id after failure: new run clears it", FAILED, _start(8), FRESH_8),
    Case("start other id after completion: new run", COMPLETE, _start(8), FRESH_8),
    Case("start with zero jobs", IDLE_STATE, _start(8, 0), TrackerError),
    Case("start with negative manager id", IDLE_STATE, _start(-1), TrackerError),
    Case("start with a manager id beyond 64 bits", IDLE_STATE, _start(2**64), TrackerError),
    Case(
        "start with the largest manager id",
        IDLE_STATE,
        _start(2**64 - 1),
        replace(FRESH_8, manager_id=2**64 - 1),
    ),
    # stop
    Case(
        "stop a new job: recorded, sorted",
        RUNNING,
        _stop(7, "0_9"),
        replace(RUNNING, completed_jobs=("0_9", "1_0"), updated_at=NOW),
    ),
    Case("stop a job twice: counted once", RUNNING, _stop(7, "1_0"), RUNNING),
    Case("stop the last job: complete", ALMOST, _stop(7, "1_2"), replace(COMPLETE, updated_at=NOW)),
    Case("stop other id while running: ownership", RUNNING, _stop(8, "1_1"), TrackerOwnershipError),
    Case("stop other id after failure: ownership", FAILED, _stop(8, "1_2"), TrackerOwnershipError),
    Case("stop other id after completion: ownership", COMPLETE, _stop(8, "1_2"), TrackerOwnershipError),
    Case("stop on idle tracker: error", IDLE_STATE, _stop(7, "1_0"), TrackerError),
    Case(
        "stop after failure: counted, stays failed (a sibling of a job waiting for its retry)",
        FAILED,
        _stop(7, "1_2"),
        replace(FAILED, completed_jobs=("1_0", "1_2"), updated_at=NOW),
    ),
    Case("stop after completion: unchanged", COMPLETE, _stop(7, "1_3"), COMPLETE),
    Case("stop without a job identity", RUNNING, _stop(7, " "), TrackerError),
    # error
    Case(
        "error while running: failed",
        RUNNING,
        _error(7, "1_2", "out of memory"),
        replace(RUNNING, failure=TrackerFailure("1_2", "out of memory", NOW), updated_at=NOW),
    ),
    Case(
        "error without a job: recorded as unknown",
        RUNNING,
        _error(7, ""),
        replace(RUNNING, failure=TrackerFailure("unknown", "", NOW), updated_at=NOW),
    ),
    Case("error after failure: first failure kept", FAILED, _error(7, "1_2", "later"), FAILED),
    Case("error after completion: unchanged", COMPLETE, _error(7, "1_2"), COMPLETE),
    Case("error other id while running: ownership", RUNNING, _error(8, "1_2"), TrackerOwnershipError),
    Case("error other id after failure: ownership", FAILED, _error(8, "1_2"), TrackerOwnershipError),
    Case("error on idle tracker: error", IDLE_STATE, _error(7, "1_2"), TrackerError),
    # retry: only the owner, only the failed job's own failure
    Case(
        "retry the failed job: its failure moves into the history",
        FAILED,
        _retry(7, "1_1", 2),
        replace(FAILED, failure=None, retries=(TrackerRetry("1_1", 2, "boom", NOW),), updated_at=NOW),
    ),
    Case(
        "retry a job that died without a record: recorded",
        RUNNING,
        _retry(7, "1_2", 2),
        replace(RUNNING, retries=(TrackerRetry("1_2", 2, "", NOW),), updated_at=NOW),
    ),
    Case(
        "retry recorded twice (a restarted manager): unchanged",
        replace(RUNNING, retries=(TrackerRetry("1_2", 2, "", T0),)),
        _retry(7, "1_2", 2),
        replace(RUNNING, retries=(TrackerRetry("1_2", 2, "", T0),)),
    ),
    Case("retry a sibling of the failed job: refused", FAILED, _retry(7, "1_2", 2), TrackerError),
    Case("retry by another manager: ownership", FAILED, _retry(8, "1_1", 2), TrackerOwnershipError),
    Case("retry as attempt 1: refused", FAILED, _retry(7, "1_1", 1), TrackerError),
    Case("retry on idle tracker: error", IDLE_STATE, _retry(7, "1_1", 2), TrackerError),
]


@pytest.mark.parametrize("case", TRANSITIONS, ids=[c.id for c in TRANSITIONS])
def test_transition(case: Case) -> None:
    if isinstance(case.after, TrackerState):
        assert case.action(case.before) == case.after
    else:
        with pytest.raises(case.after) as raised:
            case.action(case.before)
        assert str(PATH) in str(raised.value)
        assert raised.value.path == PATH
        if case.after is TrackerError:  # not the ownership subclass: an argument or an idle tracker
            assert not isinstance(raised.value, TrackerOwnershipError)


def test_ownership_error_names_file_owner_and_caller() -> None:
    with pytest.raises(TrackerOwnershipError) as raised:
        record_completion(RUNNING, 12345, "1_1", now=NOW, path=PATH)
    error = raised.value
    assert (error.owner, error.caller) == (7, 12345)
    message = str(error)
    assert str(PATH) in message and "manager 7" in message and "manager 12345" in message
    assert message.count(". ") == 0 and message.endswith(".")  # one sentence


@pytest.mark.parametrize(
    ("state", "phase", "running", "complete", "error"),
    [
        (IDLE_STATE, TrackerPhase.IDLE, False, False, False),
        (RUNNING, TrackerPhase.RUNNING, True, False, False),
        (COMPLETE, TrackerPhase.COMPLETE, False, True, False),
        (FAILED, TrackerPhase.FAILED, False, False, True),
        (replace(COMPLETE, failure=FAILED.failure), TrackerPhase.FAILED, False, False, True),
    ],
)
def test_phase_flags(
    state: TrackerState, phase: TrackerPhase, running: bool, complete: bool, error: bool
) -> None:
    assert (state.phase, state.is_running, state.is_complete, state.encountered_error) == (
        phase,
        running,
        complete,
        error,
    )


def _run(state: TrackerState, *actions: Callable[[TrackerState], TrackerState]) -> TrackerState:
    for action in actions:
        state = action(state)
    return state


def test_failure_survives_a_sibling_that_starts_later_and_the_remaining_completions() -> None:
    state = _run(IDLE_STATE, _start(7, 3), _stop(7, "a"), _error(7, "b", "segfault"))
    state = _run(state, _start(7, 3), _stop(7, "c"), _stop(7, "b"))
    assert state.encountered_error and not state.is_complete and not state.is_running
    assert state.failure == TrackerFailure("b", "segfault", NOW)
    assert state.completed_jobs == ("a", "b", "c")  # counted, yet the run stays failed
    assert _run(state, _start(8, 1)) == TrackerState(
        manager_id=8, job_count=1, started_at=NOW, updated_at=NOW
    )


def test_a_retry_lets_the_retried_job_complete_the_run_its_siblings_finished_meanwhile() -> None:
    state = _run(IDLE_STATE, _start(7, 3), _stop(7, "a"), _error(7, "b", "killed"), _stop(7, "c"))
    assert state.encountered_error
    with pytest.raises(TrackerError, match="cannot clear another job's failure"):
        _retry(7, "c", 2)(state)
    state = _retry(7, "b", 2)(state)
    assert state.is_running and state.retries == (TrackerRetry("b", 2, "killed", NOW),)
    state = _run(state, _start(7, 3), _stop(7, "b"))
    assert state.is_complete and state.completed_jobs == ("a", "b", "c")


def test_completion_reported_twice_counts_once_and_completes_only_with_every_job() -> None:
    state = _run(IDLE_STATE, _start(7, 3), _stop(7, "a"), _stop(7, "a"), _stop(7, "b"), _stop(7, "b"))
    assert state.is_running and state.completed_jobs == ("a", "b")
    state = _stop(7, "c")(state)
    assert state.is_complete and not state.is_running and state.manager_id == 7


def test_failure_reason_is_one_short_line() -> None:
    state = _error(7, "a", "line one\n  line two\t" + "x" * 2000)(RUNNING)
    assert state.failure is not None
    assert state.failure.reason.startswith("line one line two x")
    assert len(state.failure.reason) == MAX_REASON_LENGTH


@pytest.mark.parametrize(
    ("environ", "identity"),
    [
        ({"SLURM_ARRAY_JOB_ID": "100", "SLURM_ARRAY_TASK_ID": "3", "SLURM_JOB_ID": "104"}, "100_3"),
        ({"SLURM_JOB_ID": "104"}, "104"),
        ({"SLURM_ARRAY_JOB_ID": "100", "SLURM_JOB_ID": "104"}, "104"),
        ({"SLURM_JOB_ID": " "}, None),
        ({}, None),
    ],
)
def test_job_identity_from_env(environ: dict[str, str], identity: str | None) -> None:
    assert job_identity_from_env(environ) == identity


# --- YAML ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [IDLE_STATE, RUNNING, COMPLETE, FAILED, FRESH_8, RETRIED], ids=str)
def test_dump_then_parse_round_trips(state: TrackerState) -> None:
    assert parse_tracker_text(dump_tracker_text(state), path=PATH) == state


def test_dump_is_readable_by_a_person() -> None:
    text = dump_tracker_text(FAILED)
    first, *rest = text.splitlines()
    assert first.startswith("# ") and "Do not edit by hand while a run is active" in first
    assert "status: failed" in rest and "manager_id: 7" in rest and "job_count: 3" in rest
    assert "- '1_0'" in rest and "  job: '1_1'" in rest and "  reason: boom" in rest
    assert f"started_at: '{T0}'" in rest


def test_numeric_job_ids_are_quoted_so_they_stay_strings() -> None:
    state = replace(RUNNING, completed_jobs=("1234", "1_000"))
    assert parse_tracker_text(dump_tracker_text(state), path=PATH).completed_jobs == ("1234", "1_000")


def test_unquoted_timestamps_typed_by_hand_are_accepted() -> None:
    text = dump_tracker_text(RUNNING).replace(f"'{T0}'", "2026-01-01 10:00:00+00:00")
    assert parse_tracker_text(text, path=PATH).started_at == "2026-01-01T10:00:00+00:00"


def _valid() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(dump_tracker_text(FAILED))
    return loaded


def _with(**changes: Any) -> str:
    document = _valid()
    document.update(changes)
    return yaml.safe_dump(document)


def _without(key: str) -> str:
    document = _valid()
    del document[key]
    return yaml.safe_dump(document)


CORRUPT = [
    ("not yaml", "status: [running\n", "not valid YAML"),
    ("tab indentation", "status:\n\t- x\n", "not valid YAML"),
    ("empty", "  \n", "it is empty"),
    ("comment only", "# nothing\n", "it is empty"),
    ("a list", "- 1\n- 2\n", "a list instead of a mapping"),
    ("a scalar", "hello\n", "a str instead of a mapping"),
    ("missing key", _without("failure"), "lacks the key(s) failure"),
    ("unknown key", _with(running=True), "unknown key(s) running"),
    ("newer format", _with(format=2), "format 2"),
    ("format as text", _with(format="1"), "format is a str '1' instead of int"),
    ("manager id text", _with(manager_id="seven"), "manager_id is a str 'seven'"),
    ("manager id bool", _with(manager_id=True), "manager_id is a bool"),
    ("manager id negative", _with(manager_id=-1), "manager_id -1 is not an unsigned 64-bit integer"),
    ("job count zero", _with(job_count=0), "job_count is 0"),
    ("job count float", _with(job_count=2.5), "job_count is a float"),
    ("completed not a list", _with(completed_jobs="1_0"), "completed_jobs is a str"),
    ("completed unquoted number", _with(completed_jobs=[104]), "completed_jobs holds an int 104"),
    ("completed duplicate", _with(completed_jobs=["a", "a"]), "more than once"),
    (
        "completed > job_count",
        _with(completed_jobs=["a", "b", "c", "d"]),
        "lists 4 completed jobs for job_count 3",
    ),
    ("failure not a mapping", _with(failure="boom"), "failure is 'boom'"),
    ("failure missing key", _with(failure={"job": "a", "reason": "b"}), "failure is {"),
    ("failure reason number", _with(failure={"job": "a", "reason": 3, "at": T0}), "failure reason is an int"),
    ("failure at not a time", _with(failure={"job": "a", "reason": "", "at": "noon"}), "failure at 'noon'"),
    ("started_at not a time", _with(started_at="yesterday"), "started_at 'yesterday' is not an ISO 8601"),
    ("updated_at a number", _with(updated_at=5), "updated_at is an int 5"),
    ("idle with completions", _with(manager_id=None, failure=None, status="idle"), "but no manager_id"),
    ("owner without start", _with(started_at=None), "no started_at"),
    ("status contradicts", _with(status="complete"), "status says 'complete' but its fields say 'failed'"),
]


@pytest.mark.parametrize(("text", "fragment"), [c[1:] for c in CORRUPT], ids=[c[0] for c in CORRUPT])
def test_corrupt_text_names_file_and_fault(text: str, fragment: str) -> None:
    with pytest.raises(TrackerCorruptError) as raised:
        parse_tracker_text(text, path=PATH)
    message = str(raised.value)
    assert fragment in message
    assert message.startswith(f"Tracker file {PATH} is corrupt because ")
    assert "sl-tracker abort" in message
    assert raised.value.path == PATH


def test_a_text_read_again_gives_the_same_state_and_a_corrupt_one_names_each_file_it_came_from() -> None:
    text = dump_tracker_text(FAILED)
    other = PATH.with_name("suite2p_processing_tracker.yaml")
    assert parse_tracker_text(text, path=PATH) == parse_tracker_text(text, path=other) == FAILED
    for path in (PATH, other, PATH):
        with pytest.raises(TrackerCorruptError) as raised:
            parse_tracker_text("- 1\n", path=path)
        assert raised.value.path == path
        assert str(raised.value).startswith(f"Tracker file {path} is corrupt because ")


def test_retries_are_written_only_when_there_are_some() -> None:
    assert "retries" not in dump_tracker_text(FAILED)  # readable by versions that know no retries
    loaded: dict[str, Any] = yaml.safe_load(dump_tracker_text(RETRIED))
    assert loaded["retries"] == [
        {"job": "1_1", "attempt": 2, "reason": "boom", "at": NOW},
        {"job": "1_1", "attempt": 3, "reason": "", "at": NOW},
    ]
    bad = dump_tracker_text(RETRIED).replace("attempt: 3", "attempt: three")
    with pytest.raises(TrackerCorruptError, match="retries holds"):
        parse_tracker_text(bad, path=PATH)
