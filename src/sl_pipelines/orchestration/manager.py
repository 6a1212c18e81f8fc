"""PipelineManager: cycles many pipelines over one backend connection until all have finished."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from sl_pipelines.core.seams import Backend
from sl_pipelines.errors import SchedulerError, ServerError
from sl_pipelines.orchestration.cycle import cancel_pipeline, run_cycle
from sl_pipelines.orchestration.pipeline import ProcessingPipeline
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
        max_failed_cycles: cycles in a row that may fail on an unreachable server before ``run`` gives up.
    """

    def __init__(
        self,
        backend: Backend,
        pipelines: Sequence[ProcessingPipeline],
        *,
        max_parallel: int = 8,
        poll_interval: float = 5.0,
        max_interval: float | None = None,
        max_failed_cycles: int = 10,
    ) -> None:
        if max_parallel < 1:
            raise ValueError("max_parallel must be at least 1")
        self.backend = backend
        self.pipelines = list(pipelines)
        self.max_parallel = max_parallel
        self.poll_interval = poll_interval
        self.max_interval = (
            max_interval if max_interval is not None else max(poll_interval, poll_interval * 4)
        )
        self.max_failed_cycles = max_failed_cycles
        self.cycles = 0

    @property
    def in_flight(self) -> list[ProcessingPipeline]:
        """The running pipelines allowed to advance now (started ones first)."""
        running = [p for p in self.pipelines if p.is_running]
        started = [p for p in running if p.stage > 0]
        waiting = [p for p in running if p.stage == 0]
        return (started + waiting)[: max(self.max_parallel, len(started))]

    @property
    def finished(self) -> bool:
        """True when no pipeline is running any more."""
        return not any(p.is_running for p in self.pipelines)

    def cycle(self) -> bool:
        """Runs one cycle over the pipelines in flight; True when any job or pipeline changed."""
        before = self._fingerprint()
        run_cycle(self.backend, self.in_flight)
        self.cycles += 1
        return self._fingerprint() != before

    def run(self, observer: Observer | None = None, sleep: Callable[[float], None] = time.sleep) -> bool:
        """Cycles until every pipeline has finished; True when all succeeded.

        A cycle that fails because the server or Slurm did not answer (a dropped link that did not come
        back, slurmctld restarting) is logged and tried again on the next cycle; after
        ``max_failed_cycles`` failures in a row the error is raised (the journal allows ``--resume``).
        """
        interval = self.poll_interval
        failures = 0
        while not self.finished:
            try:
                changed = self.cycle()
                failures = 0
            except (ServerError, SchedulerError) as exc:
                failures += 1
                if failures > self.max_failed_cycles:
                    raise
                logger.warning(
                    "Cycle failed (%s); trying again (%d of %d).", exc, failures, self.max_failed_cycles
                )
                changed = False
            if observer is not None:
                observer(self)
            if self.finished:
                break
            interval = self.poll_interval if changed else min(interval * 1.5, self.max_interval)
            sleep(interval)
        return all(p.status is ProcessingStatus.SUCCEEDED for p in self.pipelines)

    def cancel_all(self, reason: str = "cancelled by the user") -> None:
        """Cancels every running pipeline's jobs and records the failure in each tracker."""
        for pipeline in self.pipelines:
            cancel_pipeline(self.backend, pipeline, reason)

    def _fingerprint(self) -> tuple[object, ...]:
        return tuple(
            (p.status, p.stage, tuple(sorted((n, s.state) for n, s in p.job_states.items())))
            for p in self.pipelines
        )
