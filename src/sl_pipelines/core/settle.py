"""The final verdict on a detached run, made on the cluster once its last jobs ended (pure).

A detached run has every stage submitted at once (stage k waits for stage k-1 with ``afterok``) and a
small settling job that runs after the last stage, however it ended. The settling job reads Slurm's
states of every job and the tracker, and decides with the same rules a manager uses: a failure the
tracker holds, or one Slurm reports, fails the run with that reason; jobs that exited without reporting
fail it; only a complete tracker with every job COMPLETED succeeds. Jobs cancelled because an earlier
stage failed (their dependency could never be met) are consequences, not causes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sl_pipelines.core.states import JobState, JobStatus
from sl_pipelines.core.tracker_state import TrackerState
from sl_pipelines.vocabulary import ProcessingStatus

_CONSEQUENCES = ("Dependency", "DependencyNeverSatisfied")


@dataclass(frozen=True)
class Verdict:
    """How a detached run ended.

    Attributes:
        status: SUCCEEDED or FAILED.
        reason: why it failed, in one sentence.
        failed_job: the job the failure is pinned on.
        record: the failure must be written into the tracker (it does not hold one).
    """

    status: ProcessingStatus
    reason: str = ""
    failed_job: str | None = None
    record: bool = False


def settle(
    stages: Mapping[int, tuple[str, ...]],
    jobs: Mapping[str, JobStatus],
    tracker: TrackerState | None,
    *,
    tracker_path: str,
    tracker_problem: str = "",
) -> Verdict:
    """Decides how a detached run ended, from every job's final state and the tracker."""
    if tracker_problem:
        return Verdict(ProcessingStatus.FAILED, tracker_problem)
    if tracker is None or tracker.manager_id is None:
        return Verdict(
            ProcessingStatus.FAILED, f"Tracker {tracker_path} was removed or reset while the run ran"
        )
    if tracker.failure is not None:
        failure = tracker.failure
        return Verdict(
            ProcessingStatus.FAILED, f"Job {failure.job} reported an error: {failure.reason}", failure.job
        )
    for stage in sorted(stages):
        verdict = _stage_verdict(stage, stages[stage], jobs, tracker)
        if verdict is not None:
            return verdict
    if not tracker.is_complete:
        reason = (
            f"All jobs exited, but tracker {tracker_path} counts {len(tracker.completed_jobs)} of "
            f"{tracker.job_count} completions; jobs exited without reporting"
        )
        return Verdict(ProcessingStatus.FAILED, reason, record=True)
    return Verdict(ProcessingStatus.SUCCEEDED)


def _stage_verdict(
    stage: int, names: tuple[str, ...], jobs: Mapping[str, JobStatus], tracker: TrackerState
) -> Verdict | None:
    reported = set(tracker.completed_jobs)
    for name in names:
        status = jobs.get(name)
        if status is not None and status.state.is_failure and not _consequence(status):
            return Verdict(ProcessingStatus.FAILED, f"Slurm reports {status.describe()}", name, record=True)
    for name in names:
        status = jobs.get(name)
        if name in reported:
            continue
        if status is None or status.state in (JobState.NOT_FOUND, JobState.UNKNOWN) or status.state.is_active:
            state = status.state.value if status is not None else "no Slurm record"
            reason = (
                f"Job {name} never reported to the tracker and Slurm shows {state}; its outcome is unknown"
            )
            return Verdict(ProcessingStatus.FAILED, reason, name, record=True)
        if not _consequence(status):
            reason = f"Job {name} exited without reporting to the tracker (stage {stage})"
            return Verdict(ProcessingStatus.FAILED, reason, name, record=True)
    return None


def _consequence(status: JobStatus) -> bool:
    """A job Slurm cancelled because its dependency could never be met: an earlier failure's echo."""
    return status.state is JobState.CANCELLED and any(word in status.reason for word in _CONSEQUENCES)
