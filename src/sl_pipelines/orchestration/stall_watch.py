"""StallWatch: the manager's eye for stalled jobs and pipelines, from facts every cycle already has.

A job's running time is measured from the first cycle that saw it RUNNING (so it is at most one poll
interval short, and a resumed run counts from the resume: a stall is flagged late, never falsely); a
finished sibling's elapsed time comes from the run's usage record (``RunJournal.usage``, Slurm's own
figures) when there is one, else from the cycles that saw it start and end. Time limits are the jobs'
own (the latest attempt's, when a job was retried). Nothing is asked of the server.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sl_pipelines.core.stalls import JobTiming, Stall, StallThresholds, detect_stalls, quiet_seconds
from sl_pipelines.core.states import JobState, JobStatus
from sl_pipelines.orchestration.run import PipelineRun

logger = logging.getLogger("sl_pipelines")

Overrides = Mapping[str, float | None]

_RUNNING = JobState.RUNNING
_QUEUED_AGAIN = frozenset({JobState.PENDING, JobState.REQUEUED, JobState.REQUEUE_HOLD, JobState.REQUEUE_FED})


class StallWatch:
    """Tracks when each job started running and which stalls each run has now.

    Args:
        overrides: thresholds given for this manager (command line); they beat each pipeline
            definition's ``stalls:``, which beats the defaults.
        clock: monotonic seconds; wall: the current UTC time (tests pass fake ones).
    """

    def __init__(
        self,
        overrides: Overrides | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(tz=UTC),
    ) -> None:
        self.overrides = dict(overrides or {})
        StallThresholds().with_overrides(self.overrides)  # a wrong name or value fails here, at once
        self._clock = clock
        self._wall = wall
        self._running_since: dict[str, float] = {}  # by job name (names carry the run token)
        self._elapsed: dict[str, float] = {}
        self._thresholds: dict[str, StallThresholds] = {}
        self._shapes: dict[tuple[str, int], tuple[tuple[str, str, int], ...]] = {}
        # per run and stage: the job states last noted (the same object while a run is not decided
        # again), their states and when the first of them started running
        self._noted: dict[tuple[str, int], tuple[object, list[JobState], float | None]] = {}
        self._announced: set[tuple[str, str, str]] = set()
        self.current: dict[str, tuple[Stall, ...]] = {}
        """Each run token's stalls as of the last cycle (running runs only)."""

    def thresholds(self, run: PipelineRun) -> StallThresholds:
        """The thresholds of one run: its definition's, then this manager's overrides."""
        token = run.resolved.token
        if token not in self._thresholds:
            base = StallThresholds().with_overrides(dict(run.resolved.definition.stalls))
            self._thresholds[token] = base.with_overrides(self.overrides)
        return self._thresholds[token]

    def observe(self, runs: Sequence[PipelineRun]) -> list[tuple[PipelineRun, Stall]]:
        """Updates the stalls of every running run; returns the stalls not seen before (once each)."""
        now, wall = self._clock(), self._wall()
        fresh: list[tuple[PipelineRun, Stall]] = []
        self.current = {}
        for run in runs:
            if not run.is_running or run.stage < 1:
                continue
            token = run.resolved.token
            timings = self._timings(run, now)
            quiet = quiet_seconds(run.tracker.updated_at, wall) if run.tracker is not None else None
            stalls = detect_stalls(timings, quiet, self.thresholds(run))
            if stalls:
                self.current[token] = stalls
            for stall in stalls:
                key = (token, *stall.key)
                if key not in self._announced:
                    self._announced.add(key)
                    fresh.append((run, stall))
                    logger.warning("%s %s stalled: %s.", run.pipeline.short_name, _where(run), stall.detail)
        return fresh

    def _timings(self, run: PipelineRun, now: float) -> list[JobTiming]:
        """The stage's jobs' timings; none while no running job could be stalled yet (the common case,
        checked first: a cycle over a thousand runs must stay cheap), so only the tracker can stall then."""
        shape = self._shape(run)
        key, jobs = (run.resolved.token, run.stage), run.job_states
        noted = self._noted.get(key)
        since = self._running_since
        if noted is None or noted[0] is not jobs:  # new facts (an unchanged run keeps its dict)
            states = [self._note(jobs.get(name), name, now) for name, _, _ in shape]
            pairs = zip(shape, states, strict=True)
            first = min((since[n] for (n, _, _), st in pairs if st is _RUNNING), default=None)
            noted = self._noted[key] = (jobs, states, first)
        _, states, first = noted
        if first is None:
            return []
        longest = now - first
        thresholds = self.thresholds(run)
        shortest_limit = min(limit for _, _, limit in shape)
        soonest = min(thresholds.sibling_minimum_minutes, thresholds.limit_fraction * shortest_limit)
        if longest < soonest * 60.0:
            return []
        usage = _usage_elapsed(getattr(run.journal, "usage", None))
        attempts: Mapping[str, Any] = getattr(run.journal, "attempts", None) or {}
        timings = []
        for (name, short, limit), state in zip(shape, states, strict=True):
            seconds = now - since[name] if state is _RUNNING else None
            elapsed = usage.get(name, self._elapsed.get(name)) if state is JobState.COMPLETED else None
            timings.append(JobTiming(short, seconds, elapsed, _latest_limit(attempts.get(name)) or limit))
        return timings

    def _shape(self, run: PipelineRun) -> tuple[tuple[str, str, int], ...]:
        """The current stage's jobs as (name, short name, time limit), built once per run and stage."""
        key = (run.resolved.token, run.stage)
        shape = self._shapes.get(key)
        if shape is None:
            jobs = run.resolved.stages.get(run.stage, ())
            shape = self._shapes[key] = tuple(
                (r.name, r.key, r.job.resources.time_limit_minutes) for r in jobs
            )
        return shape

    def _note(self, status: JobStatus | None, name: str, now: float) -> JobState:
        """Notes when a job (by its name, which carries the run token) was first seen running and how long
        it ran; a job seen queued again or failed (requeued, retried) counts afresh when it runs again."""
        state = status.state if status is not None else JobState.NOT_FOUND
        if state is _RUNNING:
            self._running_since.setdefault(name, now)
        elif state is JobState.COMPLETED:
            if name in self._running_since and name not in self._elapsed:
                self._elapsed[name] = now - self._running_since[name]
        elif state in _QUEUED_AGAIN or state.is_failure:  # not on UNKNOWN: a silent Slurm resets nothing
            self._running_since.pop(name, None)
        return state


def _usage_elapsed(usage: object) -> dict[str, float]:
    """Job name → elapsed seconds of its last attempt, from ``RunJournal.usage`` (missing keys are fine)."""
    found: dict[str, tuple[int, float]] = {}
    if not isinstance(usage, Mapping):
        return {}
    for entry in usage.values():
        if not isinstance(entry, Mapping):
            continue
        name, elapsed, attempt = entry.get("name"), entry.get("elapsed_s"), entry.get("attempt", 1)
        if not (isinstance(name, str) and isinstance(elapsed, int | float) and isinstance(attempt, int)):
            continue
        if name not in found or attempt >= found[name][0]:
            found[name] = (attempt, float(elapsed))
    return {name: elapsed for name, (_, elapsed) in found.items()}


def _latest_limit(attempts: object) -> int:
    """The time limit of a job's latest attempt (``RunJournal.attempts``), or 0 when none is recorded."""
    if not isinstance(attempts, Sequence) or not attempts:
        return 0
    last = attempts[-1]
    limit = last.get("time_limit_minutes") if isinstance(last, Mapping) else None
    return limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else 0


def _where(run: PipelineRun) -> str:
    return ", ".join(run.journal.sessions)
