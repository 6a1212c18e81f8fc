"""Pipeline decisions as a table: Slurm's final states and the tracker together decide the next step."""

from __future__ import annotations

import pytest

from sl_pipelines.core.decisions import Action, RunView, decide, latest_by_name
from sl_pipelines.core.states import JobState, JobStatus
from sl_pipelines.core.tracker_state import TrackerFailure, TrackerState

ME, OTHER = 11, 22
STAGES = {1: ("b",), 2: ("p0", "p1"), 3: ("c",)}


ALL_SUBMITTED = frozenset(name for names in STAGES.values() for name in names)


def view(
    stage: int, lost: frozenset[str] = frozenset(), submitted: frozenset[str] = ALL_SUBMITTED
) -> RunView:
    return RunView(
        manager_id=ME,
        tracker_path="/t.yaml",
        stages=STAGES,
        current_stage=stage,
        lost_jobs=lost,
        submitted=submitted,
    )


def tracker(
    done: tuple[str, ...] = (), failure: TrackerFailure | None = None, owner: int | None = ME
) -> TrackerState:
    return TrackerState(manager_id=owner, job_count=4, completed_jobs=done, failure=failure)


def jobs(**states: JobState) -> dict[str, JobStatus]:
    return {name: JobStatus(str(i), name, state, 0) for i, (name, state) in enumerate(states.items())}


C, R, P, F = JobState.COMPLETED, JobState.RUNNING, JobState.PENDING, JobState.FAILED

TABLE = [
    # (name, stage, jobs, tracker, expected action, expected stage)
    ("first cycle submits stage 1", 0, {}, None, Action.SUBMIT, 1),
    ("first cycle on an idle tracker", 0, {}, TrackerState(), Action.SUBMIT, 1),
    ("stage running", 1, jobs(b=R), tracker(), Action.WAIT, 1),
    ("stage pending", 2, jobs(p0=P, p1=R), tracker(("b",)), Action.WAIT, 2),
    ("stage done and reported: next stage", 1, jobs(b=C), tracker(("b",)), Action.SUBMIT, 2),
    ("half the stage done", 2, jobs(p0=C, p1=R), tracker(("b", "p0")), Action.WAIT, 2),
    ("last stage done, tracker complete", 3, jobs(c=C), tracker(("b", "c", "p0", "p1")), Action.SUCCEED, 3),
    ("completed but never reported", 1, jobs(b=C), tracker(), Action.FAIL, 1),
    ("one of the stage never reported", 2, jobs(p0=C, p1=C), tracker(("b", "p0")), Action.FAIL, 2),
    ("Slurm FAILED before the tracker was touched", 1, jobs(b=F), tracker(), Action.FAIL, 1),
    (
        "TIMEOUT while the tracker says running",
        2,
        jobs(p0=JobState.TIMEOUT, p1=R),
        tracker(("b",)),
        Action.FAIL,
        2,
    ),
    ("OUT_OF_MEMORY", 1, jobs(b=JobState.OUT_OF_MEMORY), tracker(), Action.FAIL, 1),
    ("NODE_FAIL", 1, jobs(b=JobState.NODE_FAIL), tracker(), Action.FAIL, 1),
    ("CANCELLED", 1, jobs(b=JobState.CANCELLED), tracker(), Action.FAIL, 1),
    ("UNKNOWN is never success", 1, jobs(b=JobState.UNKNOWN), tracker(("b",)), Action.WAIT, 1),
    ("job not visible yet", 1, {}, tracker(), Action.WAIT, 1),
    ("tracker reset by sl-tracker abort", 1, jobs(b=R), TrackerState(), Action.ABORT, 1),
    ("tracker removed", 1, jobs(b=R), None, Action.ABORT, 1),
    ("tracker taken over", 1, jobs(b=R), tracker(owner=OTHER), Action.ABORT, 1),
]


@pytest.mark.parametrize(
    ("case", "stage", "found", "state", "action", "expected_stage"), TABLE, ids=[t[0] for t in TABLE]
)
def test_decision_table(
    case: str,
    stage: int,
    found: dict[str, JobStatus],
    state: TrackerState | None,
    action: Action,
    expected_stage: int,
) -> None:
    decision = decide(view(stage), found, state)
    assert decision.action is action, decision.reason
    assert decision.stage == expected_stage


def test_tracker_failure_wins_and_cancels_running_siblings() -> None:
    failure = TrackerFailure(job="p0", reason="ValueError: bad plane", at="2026-01-01T00:00:00+00:00")
    decision = decide(view(2), jobs(p0=C, p1=R), tracker(("b",), failure=failure))
    assert decision.action is Action.FAIL
    assert decision.failed_job == "p0"
    assert "bad plane" in decision.reason
    assert decision.to_cancel == ("1",)
    assert decision.tracker_has_failure


def test_slurm_failure_names_job_state_and_exit_code() -> None:
    found = {"b": JobStatus("77", "b", JobState.FAILED, 3, "NonZeroExitCode")}
    decision = decide(view(1), found, tracker())
    assert decision.failed_job == "b"
    assert decision.failed_state is JobState.FAILED
    assert "77" in decision.reason
    assert "exit code 3" in decision.reason
    assert not decision.tracker_has_failure


def test_last_stage_done_but_tracker_short_of_its_count_fails() -> None:
    state = TrackerState(manager_id=ME, job_count=9, completed_jobs=("b", "c", "p0", "p1"))
    decision = decide(view(3), jobs(c=C), state)
    assert decision.action is Action.FAIL
    assert "4 of 9" in decision.reason


def test_second_manager_is_refused_with_the_owner_id() -> None:
    decision = decide(view(0), {}, tracker(owner=OTHER))
    assert decision.action is Action.FAIL
    assert str(OTHER) in decision.reason
    assert "sl-tracker abort" in decision.reason


def test_existing_jobs_of_the_next_stage_are_adopted_not_resubmitted() -> None:
    found = jobs(b=C, p0=R)
    decision = decide(view(1), found, tracker(("b",)))
    assert decision.action is Action.SUBMIT
    assert decision.adopted == {"p0": found["p0"].job_id}
    assert decision.to_submit == ("p1",)


def test_journaled_stage_whose_jobs_never_reached_slurm_is_submitted() -> None:
    found = jobs(p0=R)
    decision = decide(view(2, submitted=frozenset({"b", "p0"})), found, tracker(("b",)))
    assert decision.action is Action.SUBMIT
    assert decision.stage == 2
    assert decision.to_submit == ("p1",)
    assert decision.adopted == {"p0": found["p0"].job_id}


def test_job_forgotten_by_slurm_after_reporting_completion_counts_as_done() -> None:
    decision = decide(view(1), {}, tracker(("b",)))
    assert decision.action is Action.SUBMIT
    assert decision.stage == 2


def test_lost_job_fails_after_grace() -> None:
    decision = decide(view(1, lost=frozenset({"b"})), {}, tracker())
    assert decision.action is Action.FAIL
    assert "no longer knows" in decision.reason


def test_latest_by_name_prefers_the_newest_submission() -> None:
    statuses = [
        JobStatus("100", "x", JobState.FAILED),
        JobStatus("101", "x", JobState.RUNNING),
        JobStatus("99", "y", JobState.COMPLETED),
    ]
    latest = latest_by_name(statuses)
    assert latest["x"].job_id == "101"
    assert latest["y"].job_id == "99"
