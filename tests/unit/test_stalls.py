"""Stall detection as a table: siblings, time limits, a quiet tracker; thresholds from YAML and flags."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sl_pipelines.core.definition import parse_definition
from sl_pipelines.core.stalls import (
    JobTiming,
    StallKind,
    StallThresholds,
    detect_stalls,
    quiet_seconds,
    tracker_stall,
)
from sl_pipelines.core.tracker_state import TrackerFailure, TrackerState
from sl_pipelines.errors import PipelineDefinitionError

MIN = 60.0
DEFAULT = StallThresholds()


def done(name: str, minutes: float, limit: int = 600) -> JobTiming:
    return JobTiming(name, elapsed_s=minutes * MIN, time_limit_minutes=limit)


def running(name: str, minutes: float, limit: int = 600) -> JobTiming:
    return JobTiming(name, running_s=minutes * MIN, time_limit_minutes=limit)


@pytest.mark.parametrize(
    ("jobs", "quiet_minutes", "expected"),
    [
        # nothing finished yet: no sibling rule
        ([running("a", 100)], None, []),
        # 3x the median (10 min) and past the 10-minute minimum
        ([done("a", 10), done("b", 10), running("c", 31)], None, [(StallKind.SIBLINGS, "c")]),
        # just under 3x the median
        ([done("a", 10), done("b", 10), running("c", 29)], None, []),
        # 3x a 1-minute median, but under the 10-minute minimum
        ([done("a", 1), running("b", 9)], None, []),
        ([done("a", 1), running("b", 11)], None, [(StallKind.SIBLINGS, "b")]),
        # the median, not the mean: one slow sibling does not hide a stall
        ([done("a", 5), done("b", 5), done("c", 100), running("d", 16)], None, [(StallKind.SIBLINGS, "d")]),
        # 80% of the time limit, whatever the siblings did
        ([running("a", 48, limit=60)], None, [(StallKind.TIME_LIMIT, "a")]),
        ([running("a", 47, limit=60)], None, []),
        # a job past both rules is flagged once, for its time limit
        ([done("a", 1), running("b", 50, limit=60)], None, [(StallKind.TIME_LIMIT, "b")]),
        # an unknown time limit never flags
        ([running("a", 1000, limit=0)], None, []),
        # a quiet tracker
        ([running("a", 1)], 120, [(StallKind.TRACKER, "")]),
        ([running("a", 1)], 119, []),
        # finished and waiting jobs are never stalled
        ([done("a", 500, limit=60), JobTiming("b", time_limit_minutes=1)], None, []),
    ],
)
def test_detect_stalls(
    jobs: list[JobTiming], quiet_minutes: float | None, expected: list[tuple[str, str]]
) -> None:
    quiet = None if quiet_minutes is None else quiet_minutes * MIN
    stalls = detect_stalls(jobs, quiet, DEFAULT)
    assert [(s.kind, s.job) for s in stalls] == expected


def test_details_say_what_and_how_long() -> None:
    (limit,) = detect_stalls([running("plane_1", 50, limit=60)], None, DEFAULT)
    assert limit.detail == "plane_1 has run 50 min, 83% of its 60 min time limit"
    (sibling,) = detect_stalls([done("a", 10), running("b", 40)], None, DEFAULT)
    assert sibling.detail == "b has run 40 min, 4.0 times the 10 min its 1 finished sibling(s) took (median)"
    (quiet,) = detect_stalls([], 3 * 3600 + 300, DEFAULT)
    assert quiet.detail == "the tracker has not changed for 3 h 05 min"


def test_thresholds_are_settable() -> None:
    tight = DEFAULT.with_overrides({"limit_fraction": 0.5, "sibling_factor": None})
    assert tight.limit_fraction == 0.5
    assert tight.sibling_factor == DEFAULT.sibling_factor
    assert detect_stalls([running("a", 31, limit=60)], None, tight)
    assert not detect_stalls([running("a", 31, limit=60)], None, DEFAULT)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"limit_fractoin": 0.5}, "unknown stall threshold 'limit_fractoin'"),
        ({"limit_fraction": 1.5}, "at most 1"),
        ({"sibling_factor": 0}, "must be a positive number"),
    ],
)
def test_bad_thresholds_are_named(overrides: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DEFAULT.with_overrides(overrides)


def test_quiet_seconds() -> None:
    now = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    assert quiet_seconds((now - timedelta(minutes=5)).isoformat(), now) == 300
    assert quiet_seconds(None, now) is None
    assert quiet_seconds("not a time", now) is None
    assert quiet_seconds("2026-01-05T11:00:00", now) is None  # no zone: not comparable, not guessed


def test_tracker_stall_only_for_a_running_tracker() -> None:
    now = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    old = (now - timedelta(minutes=30)).isoformat()
    running_state = TrackerState(manager_id=7, job_count=2, started_at=old, updated_at=old)
    assert tracker_stall(running_state, now, 20) == "the tracker has not changed for 30 min"
    assert tracker_stall(running_state, now, 40) == ""
    failed = TrackerState(manager_id=7, failure=TrackerFailure("j", "x", old), started_at=old, updated_at=old)
    assert tracker_stall(failed, now, 20) == ""


def _definition(stalls: object) -> dict[str, object]:
    return {
        "pipeline": "checksum",
        "stages": [{"name": "s", "jobs": [{"name": "j", "command": "true"}]}],
        "stalls": stalls,
    }


def test_definition_takes_a_stalls_block() -> None:
    definition = parse_definition(_definition({"limit_fraction": 0.5, "tracker_quiet_minutes": 30}))
    assert dict(definition.stalls) == {"limit_fraction": 0.5, "tracker_quiet_minutes": 30.0}
    assert dict(parse_definition({k: v for k, v in _definition({}).items() if k != "stalls"}).stalls) == {}


@pytest.mark.parametrize(
    ("stalls", "message"),
    [
        ({"limit": 0.5}, "stalls.limit: unknown key"),
        ({"limit_fraction": 2}, "stalls.limit_fraction: expected a fraction up to 1"),
        ({"sibling_factor": -1}, "stalls.sibling_factor: expected a positive float"),
        ([1], "stalls: expected a mapping"),
    ],
)
def test_definition_stalls_errors_name_the_key(stalls: object, message: str) -> None:
    with pytest.raises(PipelineDefinitionError, match=message):
        parse_definition(_definition(stalls))
