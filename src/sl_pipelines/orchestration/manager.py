"""PipelineManager: cycles many pipelines over one backend connection until all have finished."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import PurePosixPath

from sl_pipelines.core.seams import Backend
from sl_pipelines.core.stalls import Stall
from sl_pipelines.core.states import JobStatus
from sl_pipelines.errors import SchedulerError, ServerError
from sl_pipelines.orchestration.cycle import CycleReport, Unchanged, cancel_runs, gather_usage, run_cycle
from sl_pipelines.orchestration.pipeline import ProcessingPipeline
from sl_pipelines.orchestration.report import write_run_reports
from sl_pipelines.orchestration.run import PipelineRun, process_holder
from sl_pipelines.orchestration.stall_watch import Overrides, StallWatch
from sl_pipelines.vocabulary import ProcessingStatus

logger = logging.getLogger("sl_pipelines")

Observer = Callable[["PipelineManager"], None]


class PipelineManager:
    """Runs many pipelines together: one probe per cycle for all of them, at most ``max_parallel`` in flight.

    Args:
        backend: the server (or local backend) all pipelines run on.
        pipelines: the pipelines, in the order they should start.
        max_parallel: how many pipelines may be in flight at once (the rest wait their turn).
        poll_interval: seconds between cycles while nothing changes; it grows up to ``max_interval``
            while nothing happens and drops back as soon as a job changes state.
        patience: seconds the server or Slurm may stay silent (no connection, slurmctld or munge down)
            before ``run`` gives up with an error. Meanwhile every run waits: nothing is submitted or
            failed on a missing answer, and after giving up the jobs and trackers are untouched, so
            ``--resume`` finishes the runs later.
        clock: monotonic seconds (tests pass a fake clock).
        stall_thresholds: stall thresholds for every pipeline (beating their definitions' ``stalls:``);
            each cycle's stalls are in :attr:`stalls` (``current``), the new ones in :attr:`new_stalls`.
    """

    def __init__(
        self,
        backend: Backend,
        pipelines: Sequence[ProcessingPipeline],
        *,
        max_parallel: int = 8,
        poll_interval: float = 5.0,
        max_interval: float | None = None,
        patience: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        stall_thresholds: Overrides | None = None,
    ) -> None:
        if max_parallel < 1:
            raise ValueError("max_parallel must be at least 1")
        self.backend = backend
        self.pipelines = list(pipelines)
        self._unreported: list[ProcessingPipeline] = []  # ended runs whose report waits for their usage
        self.max_parallel = max_parallel
        self.poll_interval = poll_interval
        self.max_interval = (
            max_interval if max_interval is not None else max(poll_interval, poll_interval * 4)
        )
        self.patience = patience
        self.holder = process_holder(stale_after=max(120.0, 6 * self.max_interval))
        for pipeline in self.pipelines:  # the lease says when this manager counts as gone
            pipeline.holder = self.holder
        self.clock = clock
        self.cycles = 0
        self.silent_since: float | None = None
        self.last_problem = ""
        self.extra_leases: tuple[tuple[PurePosixPath, str], ...] = ()  # renewed by every probe
        self.lost_leases: dict[PurePosixPath, str] = {}  # extra leases another holder took, with its id
        self._frozen_runs = 0
        self.stalls = StallWatch(stall_thresholds, clock=clock)
        self.new_stalls: list[tuple[PipelineRun, Stall]] = []  # stalls first seen by the last cycle
        self._unchanged = Unchanged()  # runs whose facts did not change are not decided again

    def add(self, pipelines: Sequence[ProcessingPipeline]) -> None:
        """Adds pipelines to drive (a workflow's next steps); they start at the next cycle."""
        for pipeline in pipelines:
            pipeline.holder = self.holder
        self.pipelines.extend(pipelines)

    @property
    def in_flight(self) -> list[ProcessingPipeline]:
        """The running pipelines allowed to advance now (started ones first)."""
        running = [p for p in self.pipelines if p.is_running and not p.detached]
        started = [p for p in running if p.stage > 0]
        waiting = [p for p in running if p.stage == 0]
        return (started + waiting)[: max(self.max_parallel, len(started))]

    @property
    def finished(self) -> bool:
        """True when no pipeline is running any more."""
        return not any(p.is_running and not p.detached for p in self.pipelines)

    def cycle(self, *, last_usage: bool = True) -> bool:
        """Runs one cycle over the pipelines in flight; True when any job or pipeline changed.

        A cycle after which no pipeline runs any more also asks what the last jobs used (one more call),
        unless ``last_usage`` is False (a workflow may add pipelines, whose first probe asks instead).

        Raises:
            ServerError, SchedulerError: the server did not answer (see :meth:`run` for riding it out).
        """
        self._freeze_runs()
        before = [(p.status, p.stage, p.job_states) for p in self.pipelines]
        ended = [p for p in self.pipelines if not p.is_running and p.usage_wanted]  # their jobs' usage
        runs = self.in_flight
        report: CycleReport = run_cycle(
            self.backend, [*runs, *ended], self.clock, self.extra_leases, self._unchanged
        )
        self._unreported.extend(run for run in runs if not run.is_running)
        self.cycles += 1
        self.new_stalls = self.stalls.observe(self.pipelines)
        if last_usage and self.finished:
            self.finish_usage()
        self._write_reports()
        self.lost_leases.update(report.lost_leases)
        if report.slurm_problems:
            self._silent("; ".join(report.slurm_problems))
        else:
            self.silent_since, self.last_problem = None, ""
        return any(_changed(p, *seen) for p, seen in zip(self.pipelines, before, strict=False))

    def run(
        self,
        observer: Observer | None = None,
        sleep: Callable[[float], None] = time.sleep,
        advance: Observer | None = None,
    ) -> bool:
        """Cycles until every pipeline has finished; True when all succeeded.

        ``advance`` is called after every cycle, before the manager looks whether all has finished: it
        may :meth:`add` pipelines (a workflow's next steps), which then keep the manager cycling.

        A cycle in which the server or Slurm does not answer (a dropped link, slurmctld restarting, munge
        down) decides nothing; the manager logs it and asks again, for up to ``patience`` seconds of
        silence, then raises the last error (the journal allows ``--resume``).
        """
        interval = self.poll_interval
        while not self.finished:
            try:
                changed = self.cycle(last_usage=advance is None)
            except (ServerError, SchedulerError) as exc:
                self._silent(str(exc), error=exc)
                changed = False
            added = False
            if advance is not None:
                count = len(self.pipelines)
                advance(self)
                added = len(self.pipelines) != count
            if observer is not None:
                observer(self)
            if self.finished:
                break
            if added:  # new runs submit at once, without waiting for a poll
                interval = self.poll_interval
                continue
            interval = self.poll_interval if changed else min(interval * 1.5, self.max_interval)
            sleep(interval)
        self.finish_usage()
        self._write_reports(every=True)
        return all(p.status is ProcessingStatus.SUCCEEDED for p in self.pipelines)

    def finish_usage(self) -> None:
        """Asks what the last jobs of the ended runs used (no further cycle will ask): one call, if any;
        a server that does not answer leaves the records without it (logged)."""
        gather_usage(self.backend, [p for p in self.pipelines if p.usage_wanted])

    def _write_reports(self, *, every: bool = False) -> None:
        """Writes the report of each run that ended, once what its jobs used is in (or ``every``)."""
        ready = [p for p in self._unreported if every or not p.usage_wanted]
        if ready:
            self._unreported = [p for p in self._unreported if p not in ready]
            write_run_reports(self.backend, ready)

    def _silent(self, problem: str, error: Exception | None = None) -> None:
        """Notes a cycle without an answer; raises once the silence has outlasted the patience."""
        now = self.clock()
        if self.silent_since is None:
            self.silent_since = now
        self.last_problem = problem
        waited = now - self.silent_since
        if waited > self.patience:
            message = (
                f"{self.backend.name} has not answered for {waited:.0f} s ({problem}); the jobs and trackers "
                "are untouched: resume these runs with --resume once it answers again."
            )
            raise SchedulerError(message) from error
        logger.warning("No answer from %s (%s); waiting (%.0f s so far).", self.backend.name, problem, waited)

    def cancel_all(self, reason: str = "cancelled by the user") -> None:
        """Cancels every running pipeline's jobs (by id and by name) and records why in each tracker."""
        running = [p for p in self.pipelines if p.is_running]
        cancel_runs(self.backend, running, reason)
        write_run_reports(self.backend, [p for p in running if not p.is_running])

    def _freeze_runs(self) -> None:
        """Takes the runs' long-lived objects (definitions, scripts, journals of every run) out of the
        garbage collector's full passes, which otherwise walked them all every few cycles; what a cycle
        allocates is collected as before. Once per new set of runs (``gc.freeze``)."""
        if len(self.pipelines) != self._frozen_runs:
            gc.freeze()
            self._frozen_runs = len(self.pipelines)


def _changed(
    pipeline: ProcessingPipeline, status: ProcessingStatus, stage: int, jobs: Mapping[str, JobStatus]
) -> bool:
    """True when the pipeline's status, stage or the state of one of its jobs is not what it was."""
    if pipeline.status is not status or pipeline.stage != stage:
        return True
    now = pipeline.job_states
    return now is not jobs and {n: s.state for n, s in now.items()} != {n: s.state for n, s in jobs.items()}
