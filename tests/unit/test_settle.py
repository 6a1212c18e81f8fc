"""The verdict a detached run's settling job gives: never a success the run did not have."""

from __future__ import annotations

import pytest

from sl_pipelines.core.settle import settle
from sl_pipelines.core.states import JobState, JobStatus
from sl_pipelines.core.tracker_state import TrackerFailure, TrackerState
from sl_pipelines.vocabulary import ProcessingStatus

STAGES = {1: ("b",), 2: ("p0", "p1"), 3: ("c",)}
ALL = ("b", "c", "p0", "p1")
C, F, CA, TO = JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT


def jobs(**states: JobState) -> dict[str, JobStatus]:
    return {
        n: JobStatus(
            str(i), n, s, 0 if s is C else 1, "DependencyNeverSatisfied" if s is CA and n != "b" else ""
        )
        for i, (n, s) in enumerate(states.items())
    }


def tracker(done: tuple[str, ...] = ALL, failure: TrackerFailure | None = None) -> TrackerState:
    return TrackerState(manager_id=7, job_count=4, completed_jobs=done, failure=failure)


CASES = [
    ("all done and reported", jobs(b=C, p0=C, p1=C, c=C), tracker(), ProcessingStatus.SUCCEEDED, ""),
    (
        "stage 1 failed, the rest cancelled by their dependency",
        jobs(b=F, p0=CA, p1=CA, c=CA),
        tracker(()),
        ProcessingStatus.FAILED,
        "job 0 (b) FAILED",
    ),
    (
        "stage 1 silent: exited 0 without reporting",
        jobs(b=C, p0=CA, p1=CA, c=CA),
        tracker(()),
        ProcessingStatus.FAILED,
        "Job b exited without reporting",
    ),
    (
        "a plane timed out",
        jobs(b=C, p0=TO, p1=C, c=CA),
        tracker(("b", "p1")),
        ProcessingStatus.FAILED,
        "TIMEOUT",
    ),
    ("cancelled by hand", jobs(b=CA, p0=CA, p1=CA, c=CA), tracker(()), ProcessingStatus.FAILED, "CANCELLED"),
    (
        "last stage did not report",
        jobs(b=C, p0=C, p1=C, c=C),
        tracker(("b", "p0", "p1")),
        ProcessingStatus.FAILED,
        "Job c exited without reporting",
    ),
    (
        "a job Slurm never ran",
        {**jobs(b=C, p0=C, p1=C), "c": JobStatus("9", "c", JobState.NOT_FOUND)},
        tracker(("b", "p0", "p1")),
        ProcessingStatus.FAILED,
        "never reported",
    ),
]


@pytest.mark.parametrize(("case", "found", "state", "status", "words"), CASES, ids=[c[0] for c in CASES])
def test_settle_table(
    case: str, found: dict[str, JobStatus], state: TrackerState, status: ProcessingStatus, words: str
) -> None:
    verdict = settle(STAGES, found, state, tracker_path="/t.yaml")
    assert verdict.status is status, verdict.reason
    assert words in verdict.reason
    assert verdict.record == (status is ProcessingStatus.FAILED)


def test_the_trackers_own_failure_wins_and_is_not_recorded_again() -> None:
    failure = TrackerFailure("p0", "segfault", "2026-01-01T00:00:00+00:00")
    verdict = settle(STAGES, jobs(b=C, p0=F, p1=C, c=CA), tracker(("b",), failure), tracker_path="/t.yaml")
    assert (verdict.status, verdict.failed_job, verdict.record) == (ProcessingStatus.FAILED, "p0", False)
    assert "segfault" in verdict.reason


def test_a_reset_or_missing_tracker_is_never_a_success() -> None:
    done = jobs(b=C, p0=C, p1=C, c=C)
    assert settle(STAGES, done, None, tracker_path="/t.yaml").status is ProcessingStatus.FAILED
    assert settle(STAGES, done, TrackerState(), tracker_path="/t.yaml").status is ProcessingStatus.FAILED
