"""What a run's decision works with: its shape, its state, a cycle's facts, and the decision (pure).

:mod:`sl_pipelines.core.decisions` decides; orchestration applies the decision in one place
(``PipelineRun.apply``). These are the values that travel between them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from sl_pipelines.core.retry import Attempt, JobRetry
from sl_pipelines.core.states import JobState, JobStatus
from sl_pipelines.core.tracker_state import TrackerState
from sl_pipelines.vocabulary import ProcessingStatus


class Action(StrEnum):
    """What the manager does after a cycle."""

    WAIT = "wait"
    SUBMIT = "submit"
    SUCCEED = "succeed"
    FAIL = "fail"
    ABORT = "abort"
    RETRY = "retry"


@dataclass(frozen=True)
class Patience:
    """How long (seconds) a run waits out an uncertain fact before it believes it."""

    lost_job: float = 60.0  # a submitted job that clean answers no longer show, and that never reported
    settle: float = 120.0  # PREEMPTED / NODE_FAIL: Slurm may requeue the job
    unknown_state: float = 600.0  # a state this package does not know
    report: float = 0.0  # finished jobs whose report the tracker does not show yet (NFS attribute caches)
    unreadable_tracker: float = 600.0  # a tracker that exists but cannot be read


@dataclass(frozen=True)
class RunSpec:
    """The static shape of a run.

    Attributes:
        manager_id: the id of the manager that owns the run.
        tracker_path: the tracker file (for messages).
        stages: stage number (from 1) → the names of its jobs.
        retry: job name → its retry policy and first resources, for the jobs that may be retried.
    """

    manager_id: int
    tracker_path: str
    stages: Mapping[int, tuple[str, ...]]
    retry: Mapping[str, JobRetry] = field(default_factory=dict)


@dataclass(frozen=True)
class RunState:
    """Everything about a run that changes; orchestration replaces it, never edits it.

    Attributes:
        stage: the last stage whose submission was started (0 before any; journaled BEFORE sbatch).
        status: RUNNING until the run succeeded, failed or was aborted.
        job_ids: job name → Slurm job id of every job known to be submitted.
        reason: why the run failed or was aborted.
        failed_job: the job the failure is pinned on, if any.
        since: condition → when it was first seen (monotonic seconds; not journaled: a resumed run
            waits each condition out again, which errs on the side of waiting).
        note: what the run waits for, for the live view (not journaled).
        limited: a submit limit held the run's jobs back: submit them one by one, not as arrays.
        attempts: job name → its attempts in order, for the jobs that may be retried (journaled).
    """

    stage: int = 0
    status: ProcessingStatus = ProcessingStatus.RUNNING
    job_ids: Mapping[str, str] = field(default_factory=dict)
    reason: str = ""
    failed_job: str | None = None
    since: Mapping[str, float] = field(default_factory=dict)
    note: str = ""
    limited: bool = False
    attempts: Mapping[str, tuple[Attempt, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Facts:
    """What this cycle learned about one run.

    Attributes:
        jobs: job name → status, for the run's jobs that Slurm was asked about (by id or by name).
        tracker: the tracker's state; None when the file does not exist.
        tracker_problem: why the tracker could not be used ("" when it could): corrupt or unreadable.
        tracker_corrupt: True when ``tracker_problem`` is a corrupt file (it will not get better).
        slurm_answered: every Slurm query answered; only then is a job's absence a fact.
        slurm_problem: why Slurm did not answer.
        now: the cycle's monotonic time.
    """

    jobs: Mapping[str, JobStatus]
    tracker: TrackerState | None
    now: float
    tracker_problem: str = ""
    tracker_corrupt: bool = False
    slurm_answered: bool = True
    slurm_problem: str = ""


@dataclass(frozen=True)
class Decision:
    """Everything one cycle changes for one run.

    Attributes:
        action: what to do.
        stage: the stage to submit (SUBMIT) or the stage the decision is about.
        to_submit: names of jobs of ``stage`` to submit.
        reason: why the run failed or was aborted (one sentence), or what it waits for.
        failed_job: the job the failure is pinned on.
        failed_state: Slurm's state of that job, when Slurm reported the failure.
        to_cancel: ids of the run's jobs that may still run (FAIL/ABORT), cancelled AFTER the record.
        record: the failure must be written into the tracker (it does not hold one yet).
        found_ids: jobs found by name whose ids were not known: journal them.
        since: the run's timers after this cycle.
        stale: ids of requeued copies of jobs that already reported completion: cancel them, whatever
            the action, so that finished work never runs twice.
        to_retry: (RETRY) job name → its attempts with the ended one's outcome filled in and the next
            one appended: record the retries in the tracker, journal them, then submit those jobs.
    """

    action: Action
    stage: int
    to_submit: tuple[str, ...] = ()
    reason: str = ""
    failed_job: str | None = None
    failed_state: JobState | None = None
    to_cancel: tuple[str, ...] = ()
    record: bool = False
    found_ids: Mapping[str, str] = field(default_factory=dict)
    since: Mapping[str, float] = field(default_factory=dict)
    stale: tuple[str, ...] = ()
    to_retry: Mapping[str, tuple[Attempt, ...]] = field(default_factory=dict)
