"""The gate that starts every later job of a detached run, on a real tracker file."""

from __future__ import annotations

from pathlib import Path

from sl_pipelines.adapters.tracker_store import ProcessingTracker
from sl_pipelines.workers.detached import gate


def test_the_gate_lets_a_job_work_only_after_its_whole_stage_reported(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    tracker = ProcessingTracker(path)
    tracker.start(7, job_count=3)
    tracker.stop(7, job="a")
    why = gate(path, 7, "c", ["a", "b"])
    assert why is not None and "job b never reported" in why
    failure = tracker.read().failure
    assert failure is not None and failure.job == "c" and "job b never reported" in failure.reason


def test_the_gate_opens_when_the_stage_completed_and_stays_shut_after_a_failure(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    tracker = ProcessingTracker(path)
    tracker.start(7, job_count=3)
    tracker.stop(7, job="a")
    tracker.stop(7, job="b")
    assert gate(path, 7, "c", ["a", "b"]) is None
    tracker.error(7, job="x", reason="boom")
    why = gate(path, 7, "c", ["a", "b"])
    assert why is not None and "boom" in why
    assert tracker.read().failure is not None and tracker.read().failure.job == "x"  # type: ignore[union-attr]
    assert gate(path, 8, "c", ["a"]) is not None  # another run's tracker: never work
