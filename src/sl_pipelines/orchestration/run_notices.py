"""RunNotices: tells a :class:`~sl_pipelines.adapters.notify.Notifier` what a manager's runs do.

After each cycle (as the manager's observer) it posts a message for every pipeline that has just failed
or been aborted and for every stall the cycle found (once each); at the end, one summary of the whole
run. Posting only queues the message: the sending happens on the notifier's own thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from sl_pipelines.adapters.notify import Notifier
from sl_pipelines.core.notify_text import RunFacts, failure_notice, run_end_notice, stall_notice
from sl_pipelines.orchestration.manager import PipelineManager
from sl_pipelines.orchestration.run import PipelineRun
from sl_pipelines.vocabulary import ProcessingStatus

_ENDED_BADLY = (ProcessingStatus.FAILED, ProcessingStatus.ABORTED)


def run_facts(run: PipelineRun) -> RunFacts:
    """What a message says about one run (its usage records when the run has them)."""
    report = run.failure
    usage = getattr(run.journal, "usage", None)
    return RunFacts(
        pipeline=run.pipeline.short_name,
        sessions=tuple(run.journal.sessions),
        token=run.resolved.token,
        status=run.status.name,
        reason=report.reason if report is not None else "",
        failed_job=(report.job or "") if report is not None else "",
        stderr_tail=report.stderr_tail if report is not None else "",
        usage=usage if isinstance(usage, dict) else None,
    )


class RunNotices:
    """Posts failure, stall and end-of-run messages for one manager's pipelines.

    Args:
        notifier: where the messages go.
        where: how messages name the server (the profile's name, or ``local``).
        clock: monotonic seconds (for the run's duration).
    """

    def __init__(self, notifier: Notifier, where: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.notifier = notifier
        self.where = where
        self._clock = clock
        self._started = clock()
        self._told: set[str] = set()

    def after_cycle(self, manager: PipelineManager) -> None:
        """Posts the failures and stalls the last cycle brought (each once)."""
        for run in manager.pipelines:
            token = run.resolved.token
            if run.status in _ENDED_BADLY and token not in self._told:
                self._told.add(token)
                self.notifier.post(failure_notice(run_facts(run), self.where))
        for stalled, stall in manager.new_stalls:
            self.notifier.post(stall_notice(run_facts(stalled), stall.detail, self.where))

    def at_end(self, runs: Sequence[PipelineRun]) -> None:
        """Posts the summary of the run (any failure not told yet first), then waits for the sending."""
        for run in runs:
            if run.status in _ENDED_BADLY and run.resolved.token not in self._told:
                self._told.add(run.resolved.token)
                self.notifier.post(failure_notice(run_facts(run), self.where))
        facts = [run_facts(run) for run in runs]
        self.notifier.post(run_end_notice(facts, self.where, self._clock() - self._started))
        self.notifier.close()


def chain(*observers: Callable[[PipelineManager], None] | None) -> Callable[[PipelineManager], None]:
    """One observer that calls each given one in turn (None ones are skipped)."""
    present = [observer for observer in observers if observer is not None]

    def observe(manager: PipelineManager) -> None:
        for observer in present:
            observer(manager)

    return observe
