"""Stalls: a job running far longer than its finished siblings or near its time limit, or a pipeline whose
tracker has not moved for a long time (pure: no I/O, no clock of its own).

The facts come from what a polling cycle already knows: how long each job of the current stage has been
running (seen by the manager, or reported by Slurm), how long its finished siblings took, each job's time
limit, and the tracker's ``updated_at``. Nothing here asks the server anything.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime
from enum import StrEnum

from sl_pipelines.core.tracker_state import TrackerState


class StallKind(StrEnum):
    """Why something counts as stalled."""

    SIBLINGS = "siblings"
    TIME_LIMIT = "time_limit"
    TRACKER = "tracker"


@dataclass(frozen=True)
class StallThresholds:
    """When a job or a pipeline counts as stalled.

    Attributes:
        sibling_factor: a running job is stalled once it has run this many times the median elapsed
            time of its finished siblings (the other jobs of its stage)...
        sibling_minimum_minutes: ...and at least this long (short jobs vary a lot; a 2-minute job
            running 7 minutes is not worth a message).
        limit_fraction: a running job is stalled once it has used this fraction of its time limit.
        tracker_quiet_minutes: a running pipeline is stalled once its tracker has not changed for this
            long.
    """

    sibling_factor: float = 3.0
    sibling_minimum_minutes: float = 10.0
    limit_fraction: float = 0.8
    tracker_quiet_minutes: float = 120.0

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"stall threshold {item.name} must be a positive number, not {value!r}")
        if self.limit_fraction > 1:
            raise ValueError(f"stall threshold limit_fraction must be at most 1, not {self.limit_fraction!r}")

    def with_overrides(self, overrides: Mapping[str, float | None]) -> StallThresholds:
        """A copy with the given thresholds changed (None leaves one as it is).

        Raises:
            ValueError: an unknown name or a value out of range (the message names it).
        """
        known = {item.name for item in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown stall threshold {unknown[0]!r} (known: {', '.join(sorted(known))})")
        changes = {key: float(value) for key, value in overrides.items() if value is not None}
        return replace(self, **changes) if changes else self


THRESHOLD_NAMES = tuple(item.name for item in fields(StallThresholds))
"""The thresholds' names, as the pipeline YAML's ``stalls:`` block takes them."""


@dataclass(frozen=True)
class JobTiming:
    """What is known of one job of the current stage.

    Attributes:
        name: the job's name.
        running_s: seconds it has been running, or None when it is not running.
        elapsed_s: seconds it took, once it finished successfully (None otherwise).
        time_limit_minutes: its time limit (0 when unknown).
    """

    name: str
    running_s: float | None = None
    elapsed_s: float | None = None
    time_limit_minutes: int = 0


@dataclass(frozen=True)
class Stall:
    """One stalled job (or, for :attr:`StallKind.TRACKER`, a whole pipeline: ``job`` is "")."""

    kind: StallKind
    job: str
    detail: str

    @property
    def key(self) -> tuple[str, str]:
        """What makes a stall the same one from cycle to cycle (a message is sent once per key)."""
        return (self.kind.value, self.job)


def detect_stalls(
    jobs: Sequence[JobTiming], tracker_quiet_s: float | None, thresholds: StallThresholds
) -> tuple[Stall, ...]:
    """The stalls among a stage's jobs and of its pipeline's tracker.

    Args:
        jobs: every job of the current stage.
        tracker_quiet_s: seconds since the tracker last changed, or None when unknown or not running.
        thresholds: when a job or pipeline counts as stalled.
    """
    finished = [job.elapsed_s for job in jobs if job.elapsed_s is not None]
    median = statistics.median(finished) if finished else None
    stalls: list[Stall] = []
    for job in jobs:
        if job.running_s is None:
            continue
        limit_s = job.time_limit_minutes * 60.0
        if limit_s > 0 and job.running_s >= thresholds.limit_fraction * limit_s:
            detail = (
                f"{job.name} has run {_duration(job.running_s)}, {job.running_s / limit_s:.0%} of its "
                f"{_duration(limit_s)} time limit"
            )
            stalls.append(Stall(StallKind.TIME_LIMIT, job.name, detail))
        elif (
            median is not None
            and job.running_s >= thresholds.sibling_factor * median
            and job.running_s >= thresholds.sibling_minimum_minutes * 60.0
        ):
            times = job.running_s / max(median, 1.0)
            detail = (
                f"{job.name} has run {_duration(job.running_s)}, {times:.1f} times the "
                f"{_duration(median)} its {len(finished)} finished sibling(s) took (median)"
            )
            stalls.append(Stall(StallKind.SIBLINGS, job.name, detail))
    if tracker_quiet_s is not None and tracker_quiet_s >= thresholds.tracker_quiet_minutes * 60.0:
        detail = f"the tracker has not changed for {_duration(tracker_quiet_s)}"
        stalls.append(Stall(StallKind.TRACKER, "", detail))
    return tuple(stalls)


def quiet_seconds(updated_at: str | None, now: datetime) -> float | None:
    """Seconds since a tracker's ``updated_at`` (ISO 8601, with a zone), or None when it has none."""
    if not updated_at:
        return None
    try:
        then = datetime.fromisoformat(updated_at)
    except ValueError:
        return None
    if then.tzinfo is None or now.tzinfo is None:
        return None
    return max(0.0, (now - then).total_seconds())


def tracker_stall(state: TrackerState, now: datetime, quiet_minutes: float) -> str:
    """Why a running tracker counts as stalled (it has not changed for ``quiet_minutes``), else ""."""
    if not state.is_running:
        return ""
    quiet = quiet_seconds(state.updated_at, now)
    thresholds = StallThresholds(tracker_quiet_minutes=quiet_minutes)
    stalls = detect_stalls((), quiet, thresholds)
    return stalls[0].detail if stalls else ""


def _duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3 h 05 min``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"
