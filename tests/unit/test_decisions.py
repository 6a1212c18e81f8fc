"""Pipeline decisions as tables: Slurm's states, the tracker and the run's timers decide the next step."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from sl_pipelines.core.decisions import (
    Action,
    Decision,
    Facts,
    Patience,
    RunSpec,
    RunState,
    decide,
    latest_by_name,
)
from sl_pipelines.core.states import JobState, JobStatus
from sl_pipelines.core.tracker_state import TrackerFailure, TrackerState

ME, OTHER = 11, 22
STAGES = {1: ("b",), 2: ("p0", "p1"), 3: ("c",)}
SPEC = RunSpec(ME, "/t.yaml", STAGES)
IDS = {name: str(100 + i) for i, name in enumerate(n for names in STAGES.values() for n in names)}
PATIENCE = Patience(lost_job=60, settle=120, unknown_state=600, report=10, unreadable_tracker=300)

C, R, P, F = JobState.COMPLETED, JobState.RUNNING, JobState.PENDING, JobState.FAILED


def state(stage: int, ids: Mapping[str, str] = IDS, since: Mapping[str, float] | None = None) -> RunState:
    return RunState(stage=stage, job_ids=dict(ids), since=dict(since or {}))


def tracker(
    done: tuple[str, ...] = (), failure: TrackerFailure | None = None, owner: int | None = ME
) -> TrackerState:
    return TrackerState(manager_id=owner, job_count=4, completed_jobs=done, failure=failure)


def jobs(**states: JobState) -> dict[str, JobStatus]:
    return {name: JobStatus(IDS[name], name, s, 0 if s is C else 1) for name, s in states.items()}


def run(
    stage: int,
    found: Mapping[str, JobStatus],
    seen: TrackerState | None,
    *,
    now: float = 1000.0,
    answered: bool = True,
    run_state: RunState | None = None,
    **facts: object,
) -> Decision:
    facts_ = Facts(jobs=found, tracker=seen, now=now, slurm_answered=answered, **facts)  # type: ignore[arg-type]
    return decide(SPEC, run_state or state(stage), facts_, PATIENCE)


TABLE = [
    # (name, stage, jobs, tracker, expected action, expected stage)
    ("first cycle submits stage 1", 0, {}, None, Action.SUBMIT, 1),
    ("first cycle on an idle tracker", 0, {}, TrackerState(), Action.SUBMIT, 1),
    ("stage running", 1, jobs(b=R), tracker(), Action.WAIT, 1),
    ("stage pending", 2, jobs(p0=P, p1=R), tracker(("b",)), Action.WAIT, 2),
    ("stage done and reported: next stage", 1, jobs(b=C), tracker(("b",)), Action.SUBMIT, 2),
    ("half the stage done", 2, jobs(p0=C, p1=R), tracker(("b", "p0")), Action.WAIT, 2),
    ("last stage done, tracker complete", 3, jobs(c=C), tracker(("b", "c", "p0", "p1")), Action.SUCCEED, 3),
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
    ("CANCELLED", 1, jobs(b=JobState.CANCELLED), tracker(), Action.FAIL, 1),
    ("BOOT_FAIL", 1, jobs(b=JobState.BOOT_FAIL), tracker(), Action.FAIL, 1),
    ("held after a requeue", 1, jobs(b=JobState.REQUEUE_HOLD), tracker(), Action.WAIT, 1),
    ("STOPPED is waited out, never lost", 1, jobs(b=JobState.STOPPED), tracker(), Action.WAIT, 1),
    ("NODE_FAIL may be requeued: wait", 1, jobs(b=JobState.NODE_FAIL), tracker(), Action.WAIT, 1),
    ("PREEMPTED may be requeued: wait", 1, jobs(b=JobState.PREEMPTED), tracker(), Action.WAIT, 1),
    ("UNKNOWN is never success", 1, jobs(b=JobState.UNKNOWN), tracker(("b",)), Action.WAIT, 1),
    ("tracker reset by sl-tracker abort", 1, jobs(b=R), TrackerState(), Action.ABORT, 1),
    ("tracker removed", 1, jobs(b=R), None, Action.ABORT, 1),
    ("tracker taken over", 1, jobs(b=R), tracker(owner=OTHER), Action.ABORT, 1),
]


@pytest.mark.parametrize(
    ("case", "stage", "found", "seen", "action", "expected_stage"), TABLE, ids=[t[0] for t in TABLE]
)
def test_decision_table(
    case: str,
    stage: int,
    found: dict[str, JobStatus],
    seen: TrackerState | None,
    action: Action,
    expected_stage: int,
) -> None:
    decision = run(stage, found, seen)
    assert decision.action is action, decision.reason
    assert decision.stage == expected_stage


def test_slurm_failure_is_recorded_then_running_siblings_cancelled() -> None:
    decision = run(2, jobs(p0=JobState.TIMEOUT, p1=R), tracker(("b",)))
    assert decision.action is Action.FAIL and decision.record
    assert decision.failed_job == "p0" and decision.failed_state is JobState.TIMEOUT
    assert "TIMEOUT" in decision.reason and "exit code 1" in decision.reason
    assert decision.to_cancel == (IDS["p1"],)


def test_tracker_failure_wins_is_not_recorded_again_and_cancels_running_siblings() -> None:
    failure = TrackerFailure("p0", "segfault", "2026-01-01T00:00:00+00:00")
    decision = run(2, jobs(p0=C, p1=R), tracker(("b",), failure))
    assert decision.action is Action.FAIL and not decision.record
    assert decision.failed_job == "p0" and "segfault" in decision.reason
    assert decision.to_cancel == (IDS["p1"],)


def test_a_failure_pinned_on_a_job_outside_the_run_still_fails_it() -> None:
    failure = TrackerFailure("unknown", "operator stopped it", "2026-01-01T00:00:00+00:00")
    decision = run(1, jobs(b=R), tracker(failure=failure))
    assert decision.action is Action.FAIL and decision.failed_job == "unknown"
    assert "operator stopped it" in decision.reason and decision.failed_state is None


def test_second_manager_is_refused_with_the_owner_id() -> None:
    decision = run(0, {}, tracker(owner=OTHER))
    assert decision.action is Action.FAIL
    assert str(OTHER) in decision.reason and "sl-tracker abort" in decision.reason


def test_no_answer_from_slurm_decides_nothing_and_restarts_the_slurm_timers() -> None:
    waiting = state(2, since={"lost:p0": 0.0, "report": 5.0})
    decision = run(2, {}, tracker(("b",)), answered=False, run_state=waiting, slurm_problem="squeue: down")
    assert decision.action is Action.WAIT and "squeue: down" in decision.reason
    assert decision.since == {"report": 5.0}


def test_jobs_of_the_stage_that_never_reached_slurm_are_submitted_when_slurm_answered() -> None:
    journaled = state(2, ids={"b": IDS["b"], "p0": IDS["p0"]})
    decision = run(2, jobs(p0=R), tracker(("b",)), run_state=journaled)
    assert decision.action is Action.SUBMIT and decision.stage == 2
    assert decision.to_submit == ("p1",)


def test_jobs_found_by_name_are_adopted_and_their_ids_kept() -> None:
    journaled = state(2, ids={"b": IDS["b"]})
    decision = run(2, jobs(p0=R, p1=P), tracker(("b",)), run_state=journaled)
    assert decision.action is Action.WAIT
    assert decision.found_ids == {"p0": IDS["p0"], "p1": IDS["p1"]}


def test_job_forgotten_by_slurm_after_reporting_completion_counts_as_done() -> None:
    gone = {"b": JobStatus(IDS["b"], "b", JobState.NOT_FOUND)}
    decision = run(1, gone, tracker(("b",)))
    assert decision.action is Action.SUBMIT and decision.stage == 2


def test_lost_job_is_waited_out_then_fails() -> None:
    gone = {"b": JobStatus(IDS["b"], "b", JobState.NOT_FOUND)}
    first = run(1, gone, tracker(), now=1000)
    assert first.action is Action.WAIT and first.since == {"lost:b": 1000}
    later = run(1, gone, tracker(), now=1061, run_state=state(1, since=first.since))
    assert later.action is Action.FAIL and "no longer knows" in later.reason and later.record


@pytest.mark.parametrize(
    ("job_state", "key", "limit"),
    [
        (JobState.UNKNOWN, "unknown:b", 600),
        (JobState.PREEMPTED, "settle:b", 120),
        (JobState.NODE_FAIL, "settle:b", 120),
    ],
)
def test_uncertain_states_are_waited_out_then_fail_and_cancel_the_job(
    job_state: JobState, key: str, limit: float
) -> None:
    odd = jobs(b=job_state)
    first = run(1, odd, tracker(), now=0)
    assert first.action is Action.WAIT and first.since == {key: 0}
    assert run(1, odd, tracker(), now=limit - 1, run_state=state(1, since=first.since)).action is Action.WAIT
    last = run(1, odd, tracker(), now=limit, run_state=state(1, since=first.since))
    assert last.action is Action.FAIL and last.record and job_state.value in last.reason
    assert last.to_cancel == (IDS["b"],)


def test_a_requeued_job_clears_its_settling_timer() -> None:
    decision = run(1, jobs(b=P), tracker(), run_state=state(1, since={"settle:b": 0}))
    assert decision.action is Action.WAIT and decision.since == {}


def test_jobs_that_exit_without_reporting_fail_after_the_report_grace() -> None:
    first = run(1, jobs(b=C), tracker(), now=0)
    assert first.action is Action.WAIT and first.since == {"report": 0}
    late = run(1, jobs(b=C), tracker(), now=10, run_state=state(1, since=first.since))
    assert late.action is Action.FAIL and "without reporting" in late.reason and late.failed_job == "b"
    shown = run(1, jobs(b=C), tracker(("b",)), now=5, run_state=state(1, since=first.since))
    assert shown.action is Action.SUBMIT and shown.stage == 2


def test_last_stage_done_but_tracker_short_of_its_count_fails_after_the_grace() -> None:
    short = TrackerState(manager_id=ME, job_count=5, completed_jobs=("b", "c", "p0", "p1"))
    assert run(3, jobs(c=C), short, now=0).action is Action.WAIT
    late = run(3, jobs(c=C), short, now=20, run_state=state(3, since={"report": 0}))
    assert late.action is Action.FAIL and "4 of 5" in late.reason


def test_corrupt_tracker_fails_and_cancels_but_cannot_be_recorded() -> None:
    decision = run(1, jobs(b=R), None, tracker_problem="Tracker /t.yaml is corrupt", tracker_corrupt=True)
    assert decision.action is Action.FAIL and not decision.record
    assert decision.to_cancel == (IDS["b"],)


def test_unreadable_tracker_is_waited_out() -> None:
    first = run(1, jobs(b=R), None, now=0, tracker_problem="Tracker /t.yaml cannot be read")
    assert first.action is Action.WAIT
    late = run(1, jobs(b=R), None, now=301, run_state=state(1, since=first.since), tracker_problem="x")
    assert late.action is Action.FAIL


def test_latest_by_name_prefers_the_newest_submission() -> None:
    statuses = [
        JobStatus("100", "x", JobState.FAILED),
        JobStatus("101", "x", JobState.RUNNING),
        JobStatus("99", "y", JobState.COMPLETED),
    ]
    latest = latest_by_name(statuses)
    assert latest["x"].job_id == "101"
    assert latest["y"].job_id == "99"


def test_a_requeued_copy_of_a_job_that_reported_is_done_and_cancelled() -> None:
    held = {"b": JobStatus(IDS["b"], "b", JobState.PENDING, reason="launch failed requeued held")}
    decision = run(1, held, tracker(("b",)))
    assert decision.action is Action.SUBMIT and decision.stage == 2
    assert decision.stale == (IDS["b"],)
    unreported = run(1, held, tracker())
    assert unreported.action is Action.WAIT and unreported.stale == ()
    assert "launch failed requeued held" in unreported.reason
