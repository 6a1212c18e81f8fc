"""Applying RETRY decisions: record each retry in the tracker, journal the attempt, then resubmit the job.

The order keeps both rules of the run: a failure is cleared only by an explicit manager action on that
one job (the tracker's ``retry`` operation, which refuses to touch another job's failure), and nothing
is submitted twice across a restart (the new attempt is journaled BEFORE its sbatch; a restarted manager
finds it by its attempt's own Slurm name, or submits it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

from sl_pipelines.core.decisions import Action, Decision
from sl_pipelines.core.seams import Backend, TrackerAction, TrackerOperation
from sl_pipelines.orchestration.run import PipelineRun

logger = logging.getLogger("sl_pipelines")


def prepare_retries(
    backend: Backend, items: Sequence[tuple[PipelineRun, Decision]]
) -> list[tuple[PipelineRun, Decision]]:
    """Records the retries in the trackers (ONE call) and journals the new attempts; returns the
    submissions to make (one SUBMIT decision per run, for its retried jobs only).

    A run whose tracker refused a retry (or whose lock was busy) submits nothing this cycle; the next
    cycle decides again from what the tracker then says.
    """
    operations = [
        TrackerOperation(
            TrackerAction.RETRY, run.remote_tracker_path, run.manager_id, job=name, attempt=tries[-1].attempt
        )
        for run, decision in items
        for name, tries in decision.to_retry.items()
    ]
    if not operations:
        return []
    outcomes = iter(backend.update_trackers(operations))
    now = datetime.now(tz=UTC).isoformat(timespec="seconds")
    submissions = []
    for run, decision in items:
        answers = [outcome for _, outcome in zip(decision.to_retry, outcomes, strict=False)]
        refused = [outcome.error for outcome in answers if not outcome.ok]
        if refused:
            run.apply(note=f"could not record the retry yet: {refused[0]}")
            continue
        attempts = dict(run.state.attempts)
        for name, history in decision.to_retry.items():
            attempts[name] = (*history[:-1], replace(history[-1], submitted_at=now))
            logger.warning("%s: %s, attempt %d", run.describe(), decision.reason, history[-1].attempt)
        job_ids = {k: v for k, v in run.state.job_ids.items() if k not in decision.to_retry}
        run.apply(attempts=attempts, job_ids=job_ids, since=decision.since, note=decision.reason)
        names = tuple(decision.to_retry)
        submit = Decision(Action.SUBMIT, decision.stage, to_submit=names, since=decision.since)
        submissions.append((run, submit))
    return submissions
