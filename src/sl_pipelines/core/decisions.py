"""Pipeline decisions: given what Slurm and the tracker say, what the manager does next (pure).

The rules (DESIGN.md, "runtime_cycle() rules"):

* Trust, then verify: an outcome is decided from Slurm's final state AND the tracker. A job that Slurm
  reports FAILED / TIMEOUT / OUT_OF_MEMORY / CANCELLED / NODE_FAIL fails the pipeline with that reason,
  even when it died before it could write the tracker. Jobs that all COMPLETED but did not record
  their completion fail the pipeline ("exited without reporting"). UNKNOWN is never success.
* A stage's jobs that already exist (found by name) are adopted, never submitted again.
* A tracker taken over or reset by someone else (``sl-tracker abort``) aborts the run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from sl_pipelines.core.states import JobState, JobStatus
from sl_pipelines.core.tracker_state import TrackerState


class Action(StrEnum):
    """What the manager does after a cycle."""

    WAIT = "wait"
    SUBMIT = "submit"
    SUCCEED = "succeed"
    FAIL = "fail"
    ABORT = "abort"


@dataclass(frozen=True)
class Decision:
    """The outcome of one decision.

    Attributes:
        action: what to do.
        stage: the stage to submit (SUBMIT) or the stage the decision is about.
        to_submit: names of the stage's jobs that do not exist yet (SUBMIT).
        adopted: jobs of the stage found already submitted, by name (SUBMIT after a restart).
        reason: why the pipeline failed or was aborted, in one sentence.
        failed_job: the job the failure is pinned on, if any.
        failed_state: Slurm's state of that job, if Slurm reported the failure.
        to_cancel: ids of jobs still active that should be cancelled (FAIL/ABORT).
        tracker_has_failure: True when the tracker already records the failure (nothing to write).
    """

    action: Action
    stage: int = 0
    to_submit: tuple[str, ...] = ()
    adopted: Mapping[str, str] | None = None
    reason: str = ""
    failed_job: str | None = None
    failed_state: JobState | None = None
    to_cancel: tuple[str, ...] = ()
    tracker_has_failure: bool = False


@dataclass(frozen=True)
class RunView:
    """What the decision needs to know about the run.

    Attributes:
        manager_id: the id of the manager that owns the run.
        tracker_path: the tracker file (for messages).
        stages: stage number (from 1) → the names of its jobs.
        current_stage: the last stage submitted (0 before the first submission).
        lost_jobs: names of jobs Slurm has not known for longer than the grace period.
        submitted: names of jobs whose submission returned a job id (journaled). A job of the current
            stage that Slurm does not know, that has no id and never reported to the tracker was never
            submitted (the manager died between journaling the stage and sbatch): it is submitted now.
    """

    manager_id: int
    tracker_path: str
    stages: Mapping[int, tuple[str, ...]]
    current_stage: int
    lost_jobs: frozenset[str] = frozenset()
    submitted: frozenset[str] = frozenset()


def latest_by_name(jobs: Sequence[JobStatus]) -> dict[str, JobStatus]:
    """Picks, for each job name, the most recently submitted job (the highest id)."""
    latest: dict[str, JobStatus] = {}
    for status in jobs:
        known = latest.get(status.name)
        if known is None or _id_key(status.job_id) >= _id_key(known.job_id):
            latest[status.name] = status
    return latest


def _id_key(job_id: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else -1 for part in job_id.replace("_", ".").split("."))


def decide(view: RunView, jobs: Mapping[str, JobStatus], tracker: TrackerState | None) -> Decision:
    """Decides the next action of one pipeline from its jobs' states and its tracker."""
    if view.current_stage == 0:
        return _before_start(view, jobs, tracker)
    names = view.stages[view.current_stage]
    active = tuple(jobs[n].job_id for n in names if n in jobs and jobs[n].state.is_active)
    problem = _tracker_problem(view, tracker)
    if problem is not None:
        return Decision(Action.ABORT, view.current_stage, reason=problem, to_cancel=active)
    assert tracker is not None
    if tracker.encountered_error and tracker.failure is not None:
        failure = tracker.failure
        return Decision(
            Action.FAIL,
            view.current_stage,
            reason=f"Job {failure.job} reported an error: {failure.reason}",
            failed_job=failure.job,
            failed_state=jobs[failure.job].state if failure.job in jobs else None,
            to_cancel=active,
            tracker_has_failure=True,
        )
    return _judge_stage(view, names, jobs, tracker, active)


def _before_start(view: RunView, jobs: Mapping[str, JobStatus], tracker: TrackerState | None) -> Decision:
    if tracker is not None and tracker.is_running and tracker.manager_id != view.manager_id:
        return Decision(
            Action.FAIL,
            reason=(
                f"Tracker {view.tracker_path} is running under manager {tracker.manager_id}, "
                f"not this manager ({view.manager_id}); wait for that run to finish, "
                "or reset it with 'sl-tracker abort'"
            ),
        )
    return _submit(view, 1, jobs)


def _submit(view: RunView, stage: int, jobs: Mapping[str, JobStatus]) -> Decision:
    names = view.stages[stage]
    adopted = {n: jobs[n].job_id for n in names if n in jobs and jobs[n].state is not JobState.NOT_FOUND}
    missing = tuple(n for n in names if n not in adopted)
    return Decision(Action.SUBMIT, stage, to_submit=missing, adopted=adopted)


def _tracker_problem(view: RunView, tracker: TrackerState | None) -> str | None:
    if tracker is None:
        return f"Tracker {view.tracker_path} disappeared while the pipeline ran; it was removed by hand"
    if tracker.manager_id is None:
        return f"Tracker {view.tracker_path} was reset (sl-tracker abort) while the pipeline ran"
    if tracker.manager_id != view.manager_id:
        return (
            f"Tracker {view.tracker_path} was taken over by manager {tracker.manager_id} "
            f"while this manager ({view.manager_id}) ran"
        )
    return None


def _judge_stage(
    view: RunView,
    names: tuple[str, ...],
    jobs: Mapping[str, JobStatus],
    tracker: TrackerState,
    active: tuple[str, ...],
) -> Decision:
    stage = view.current_stage
    early = _slurm_failure(view, names, jobs, active) or _never_submitted(view, names, jobs, tracker)
    if early is not None:
        return early
    reported = set(tracker.completed_jobs)
    # A job Slurm has forgotten (purged after MinJobAge, no accounting) that reported completion did run.
    if any(not (jobs[n].state.is_terminal if n in jobs else n in reported) for n in names):
        return Decision(Action.WAIT, stage)
    unreported = [n for n in names if n not in reported]
    if unreported:
        reason = (
            f"Job {unreported[0]} exited without reporting to the tracker "
            f"({len(unreported)} of {len(names)} jobs of stage {stage} did not report)"
        )
        return Decision(Action.FAIL, stage, reason=reason, failed_job=unreported[0])
    if stage < max(view.stages):
        return _submit(view, stage + 1, jobs)
    if tracker.is_complete:
        return Decision(Action.SUCCEED, stage)
    reason = (
        f"All jobs exited, but tracker {view.tracker_path} counts {len(tracker.completed_jobs)} of "
        f"{tracker.job_count} completions; jobs exited without reporting"
    )
    return Decision(Action.FAIL, stage, reason=reason)


def _never_submitted(
    view: RunView, names: tuple[str, ...], jobs: Mapping[str, JobStatus], tracker: TrackerState
) -> Decision | None:
    """Jobs of the journaled stage that Slurm never saw: the manager died before sbatch."""
    reported = set(tracker.completed_jobs)
    missing = tuple(n for n in names if n not in jobs and n not in view.submitted and n not in reported)
    if not missing:
        return None
    adopted = {n: jobs[n].job_id for n in names if n in jobs}
    return Decision(Action.SUBMIT, view.current_stage, to_submit=missing, adopted=adopted)


def _slurm_failure(
    view: RunView, names: tuple[str, ...], jobs: Mapping[str, JobStatus], active: tuple[str, ...]
) -> Decision | None:
    """A failure Slurm reports (or a job Slurm lost), even if the job never wrote the tracker."""
    stage = view.current_stage
    for name in names:
        status = jobs.get(name)
        if status is not None and status.state.is_failure:
            reason = f"Slurm reports {status.describe()}"
            return Decision(
                Action.FAIL,
                stage,
                reason=reason,
                failed_job=name,
                failed_state=status.state,
                to_cancel=active,
            )
    lost = [n for n in names if n in view.lost_jobs]
    if lost:
        reason = (
            f"Slurm no longer knows job {lost[0]} and no final state was recorded; its outcome is unknown"
        )
        return Decision(Action.FAIL, stage, reason=reason, failed_job=lost[0], to_cancel=active)
    return None
