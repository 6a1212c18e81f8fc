"""Pipeline decisions: from what Slurm and the tracker say, everything the next step changes (pure).

:func:`decide` takes a run's static shape (:class:`RunSpec`), its state (:class:`RunState`) and this
cycle's facts (:class:`Facts`) and returns a :class:`Decision`: the action, the jobs to submit or cancel,
the failure to record, and the run's new timers and newly found job ids. Orchestration applies a decision
in one place; nothing else decides.

The rules (DESIGN.md, "runtime_cycle() rules"):

* Trust, then verify: an outcome is decided from Slurm's final state AND the tracker. A job Slurm reports
  FAILED / TIMEOUT / OUT_OF_MEMORY / CANCELLED … fails the pipeline with that reason, even when it died
  before it could write the tracker. Jobs that all COMPLETED without reporting fail the pipeline
  ("exited without reporting") once the report grace has passed. UNKNOWN is never success.
* No answer is not "no job": when a Slurm query did not answer, the run waits. Nothing is submitted,
  failed or declared lost on a missing answer.
* Settle before believing: PREEMPTED and NODE_FAIL may be followed by a requeue; a state this package
  does not know, and a known job Slurm no longer knows, are waited out before they fail the run.
* A job of the current stage that has no id and that a clean answer does not show was never submitted:
  it is submitted now (after a crash between journaling the stage and sbatch, or a deferred sbatch).
* A tracker taken over or reset by someone else (``sl-tracker abort``) aborts the run.
* Retries: a job with a retry policy whose attempt ended in a state the policy retries runs again
  (RETRY), alone and with escalated resources (:mod:`sl_pipelines.core.retry`); its siblings are left
  as they are. A failure the job recorded in the tracker waits for Slurm's final state before the
  decision. When no attempt is left, the run fails naming the last attempt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from sl_pipelines.core.retry import Attempt, RetryVerdict, first_attempt, next_attempt
from sl_pipelines.core.run_state import Action, Decision, Facts, Patience, RunSpec, RunState
from sl_pipelines.core.states import JobState, JobStatus

__all__ = ["Action", "Decision", "Facts", "Patience", "RunSpec", "RunState", "decide", "latest_by_name"]


_REQUEUED = frozenset(
    {JobState.PENDING, JobState.REQUEUED, JobState.REQUEUE_HOLD, JobState.REQUEUE_FED, JobState.SPECIAL_EXIT}
)
"""Waiting states of a job that has run before: after a completion report, a requeued copy."""


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


def decide(spec: RunSpec, state: RunState, facts: Facts, patience: Patience | None = None) -> Decision:
    """Decides one run's next step from its state and this cycle's facts."""
    found = {
        name: status.job_id
        for name, status in facts.jobs.items()
        if name not in state.job_ids and status.state not in (JobState.NOT_FOUND, JobState.UNKNOWN)
    }
    decision = _decide(spec, state, facts, patience or Patience())
    return replace(decision, found_ids=found, stale=_stale(spec, state, facts))


def _stale(spec: RunSpec, state: RunState, facts: Facts) -> tuple[str, ...]:
    """Requeued copies of jobs that reported completion (Slurm requeued them, e.g. after a munge outage
    lost their completion message): the work is done, and a second run must not happen."""
    if state.stage == 0 or facts.tracker is None or not facts.slurm_answered:
        return ()
    reported = set(facts.tracker.completed_jobs)
    names = spec.stages.get(state.stage, ())
    return tuple(
        status.job_id
        for name, status in facts.jobs.items()
        if name in names and name in reported and status.state in _REQUEUED
    )


def _decide(spec: RunSpec, state: RunState, facts: Facts, patience: Patience) -> Decision:
    if state.stage == 0:
        return _before_start(spec, facts)
    cancel = _cancellable(spec.stages[state.stage], state, facts)
    problem = _tracker_problem(spec, state, facts, cancel, patience)
    if problem is not None:
        return problem
    tracker = facts.tracker
    assert tracker is not None  # _tracker_problem returned a decision otherwise
    if tracker.failure is not None:
        failure = tracker.failure
        status = facts.jobs.get(failure.job)
        retried = _reported_failure(spec, state, facts, patience, cancel)
        if retried is not None:
            return retried
        return Decision(
            Action.FAIL,
            state.stage,
            reason=f"Job {failure.job} reported an error: {failure.reason}",
            failed_job=failure.job,
            failed_state=status.state if status is not None else None,
            to_cancel=cancel,
            since=state.since,
        )
    if not facts.slurm_answered:
        kept = {k: v for k, v in state.since.items() if not k.startswith(_SLURM_TIMERS)}
        return Decision(
            Action.WAIT, state.stage, reason=f"Slurm did not answer: {facts.slurm_problem}", since=kept
        )
    return _judge_stage(spec, state, facts, patience, cancel)


_SLURM_TIMERS = ("lost:", "settle:", "unknown:")


def _before_start(spec: RunSpec, facts: Facts) -> Decision:
    tracker = facts.tracker
    if facts.tracker_problem:
        reason = f"{facts.tracker_problem}; nothing was submitted"
        return Decision(Action.FAIL, 0, reason=reason)
    if tracker is not None and tracker.is_running and tracker.manager_id != spec.manager_id:
        return Decision(
            Action.FAIL,
            0,
            reason=(
                f"Tracker {spec.tracker_path} is running under manager {tracker.manager_id}, "
                f"not this manager ({spec.manager_id}); wait for that run to finish, "
                "or reset it with 'sl-tracker abort'"
            ),
        )
    return Decision(Action.SUBMIT, 1, to_submit=spec.stages[1])


def _cancellable(names: tuple[str, ...], state: RunState, facts: Facts) -> tuple[str, ...]:
    """Ids of the stage's jobs that may still run: every id not known to have ended for good.

    A preempted or node-failed job counts: Slurm may still requeue it.
    """
    ids = []
    for name in names:
        status = facts.jobs.get(name)
        job_id = state.job_ids.get(name) or (status.job_id if status is not None else None)
        ended = status is not None and status.state.is_terminal and not status.state.may_requeue
        if job_id is None or ended:
            continue
        if status is not None and status.state is JobState.NOT_FOUND:
            continue
        ids.append(job_id)
    return tuple(ids)


def _tracker_problem(
    spec: RunSpec, state: RunState, facts: Facts, cancel: tuple[str, ...], patience: Patience
) -> Decision | None:
    tracker, stage = facts.tracker, state.stage
    if facts.tracker_problem and facts.tracker_corrupt:
        return Decision(Action.FAIL, stage, reason=facts.tracker_problem, to_cancel=cancel, since=state.since)
    if facts.tracker_problem:
        since = dict(state.since)
        started = since.setdefault("tracker", facts.now)
        if facts.now - started < patience.unreadable_tracker:
            return Decision(Action.WAIT, stage, reason=facts.tracker_problem, since=since)
        return Decision(Action.FAIL, stage, reason=facts.tracker_problem, to_cancel=cancel, since=since)
    if tracker is None:
        reason = f"Tracker {spec.tracker_path} disappeared while the pipeline ran; it was removed by hand"
    elif tracker.manager_id is None:
        reason = f"Tracker {spec.tracker_path} was reset (sl-tracker abort) while the pipeline ran"
    elif tracker.manager_id != spec.manager_id:
        reason = (
            f"Tracker {spec.tracker_path} was taken over by manager {tracker.manager_id} "
            f"while this manager ({spec.manager_id}) ran"
        )
    else:
        return None
    return Decision(Action.ABORT, stage, reason=reason, to_cancel=cancel, since=state.since)


@dataclass
class _Survey:
    """The current stage's jobs, sorted by what the facts say about each."""

    state: RunState
    facts: Facts
    failed: list[tuple[str, JobStatus]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    unreported: list[str] = field(default_factory=list)
    expired: list[tuple[str, str, JobStatus]] = field(default_factory=list)
    since: dict[str, float] = field(default_factory=dict)

    def wait_out(self, key: str, limit: float, status: JobStatus, reason: str) -> None:
        """Waits for an uncertain state to pass, up to ``limit`` seconds since it was first seen."""
        started = self.state.since.get(key, self.facts.now)
        self.since[key] = started
        if self.facts.now - started >= limit:
            self.expired.append((status.name, reason, status))
        else:
            self.waiting.append(status.name)


def _judge_stage(
    spec: RunSpec, state: RunState, facts: Facts, patience: Patience, cancel: tuple[str, ...]
) -> Decision:
    stage = state.stage
    survey = _survey(spec.stages[stage], state, facts, patience)
    if survey.failed:
        failed = [(name, status, f"Slurm reports {status.describe()}") for name, status in survey.failed]
        return _retry_or_fail(spec, state, facts, failed, cancel=cancel, since=survey.since)
    if survey.missing:
        return Decision(Action.SUBMIT, stage, to_submit=tuple(survey.missing), since=survey.since)
    if survey.expired:
        expired = [(name, status, reason) for name, reason, status in survey.expired]
        return _retry_or_fail(spec, state, facts, expired, cancel=cancel, since=survey.since)
    if survey.waiting:
        first = facts.jobs.get(survey.waiting[0])
        detail = f" ({first.describe()})" if first is not None else ""
        return Decision(
            Action.WAIT, stage, reason=f"waiting for {survey.waiting[0]}{detail}", since=survey.since
        )
    return _stage_finished(spec, stage, survey, patience)


def _survey(names: tuple[str, ...], state: RunState, facts: Facts, patience: Patience) -> _Survey:
    survey = _Survey(state, facts, since={k: v for k, v in state.since.items() if k in ("tracker", "report")})
    reported = set(facts.tracker.completed_jobs) if facts.tracker is not None else set()
    for name in names:
        status = facts.jobs.get(name)
        if status is None:
            if name not in reported:  # reported, then forgotten by Slurm (purged after MinJobAge)
                survey.missing.append(name)  # no id, and a clean answer shows no such job: never submitted
        elif status.state is JobState.NOT_FOUND:
            if name not in reported:
                survey.wait_out(f"lost:{name}", patience.lost_job, status, _lost_reason(name))
        elif status.state is JobState.UNKNOWN:
            reason = f"Slurm reports {status.describe()}, a state this manager does not know"
            survey.wait_out(f"unknown:{name}", patience.unknown_state, status, reason)
        elif status.state.may_requeue:
            reason = f"Slurm reports {status.describe()} and did not requeue it"
            survey.wait_out(f"settle:{name}", patience.settle, status, reason)
        elif status.state.is_failure:
            survey.failed.append((name, status))
        elif status.state in _REQUEUED and name in reported:
            continue  # a requeued copy of a job that finished its work: cancelled, never waited for
        elif status.state.is_active:
            survey.waiting.append(name)
        elif name not in reported:
            survey.unreported.append(name)
    return survey


def _lost_reason(name: str) -> str:
    return f"Slurm no longer knows job {name} and it never reported to the tracker; its outcome is unknown"


def _stage_finished(spec: RunSpec, stage: int, survey: _Survey, patience: Patience) -> Decision:
    since, facts = survey.since, survey.facts
    tracker = facts.tracker
    assert tracker is not None
    names = spec.stages[stage]
    short = not survey.unreported and stage == max(spec.stages) and not tracker.is_complete
    if survey.unreported or short:
        started = since.setdefault("report", facts.now)
        if facts.now - started < patience.report:
            return Decision(Action.WAIT, stage, reason="waiting for the jobs' reports to show", since=since)
    if survey.unreported:
        first = survey.unreported[0]
        reason = (
            f"Job {first} exited without reporting to the tracker "
            f"({len(survey.unreported)} of {len(names)} jobs of stage {stage} did not report)"
        )
        return _fail(stage, reason, job=first, since=since)
    if stage < max(spec.stages):
        return Decision(Action.SUBMIT, stage + 1, to_submit=spec.stages[stage + 1])
    if tracker.is_complete:
        return Decision(Action.SUCCEED, stage)
    reason = (
        f"All jobs exited, but tracker {spec.tracker_path} counts {len(tracker.completed_jobs)} of "
        f"{tracker.job_count} completions; jobs exited without reporting"
    )
    return _fail(stage, reason, since=since)


def _reported_failure(
    spec: RunSpec, state: RunState, facts: Facts, patience: Patience, cancel: tuple[str, ...]
) -> Decision | None:
    """A failure a retryable job recorded in the tracker: wait for Slurm's final state, then retry the job
    or fail the run; None when the failure is not a retryable job's (the run fails as usual)."""
    assert facts.tracker is not None and facts.tracker.failure is not None
    failure = facts.tracker.failure
    name = failure.job
    if name not in spec.retry or name not in spec.stages.get(state.stage, ()):
        return None
    status = facts.jobs.get(name)
    settling = status is not None and status.state.may_requeue  # Slurm may still requeue it
    if status is None or not status.state.is_terminal or settling:
        since = dict(state.since)
        if not facts.slurm_answered:
            return Decision(Action.WAIT, state.stage, reason=f"Slurm did not answer: {facts.slurm_problem}")
        key, limit = (f"settle:{name}", patience.settle) if settling else (f"final:{name}", patience.lost_job)
        started = since.setdefault(key, facts.now)
        if facts.now - started < limit:
            reason = f"waiting for Slurm's final state of {name}, which reported an error: {failure.reason}"
            return Decision(Action.WAIT, state.stage, reason=reason, since=since)
        if not settling:
            return None
    assert status is not None
    if not status.state.is_failure:
        return None
    reason = f"Job {name} reported an error: {failure.reason} (Slurm reports {status.describe()})"
    decision = _retry_or_fail(spec, state, facts, [(name, status, reason)], cancel=cancel, since=state.since)
    return replace(decision, record=False)


def _retry_or_fail(
    spec: RunSpec,
    state: RunState,
    facts: Facts,
    failed: Sequence[tuple[str, JobStatus, str]],
    *,
    cancel: tuple[str, ...],
    since: Mapping[str, float],
) -> Decision:
    """Retries every failed job whose policy allows it, or fails the run on the first that it does not.

    A job that reported its completion is never retried: its work would run twice.
    """
    retries: dict[str, tuple[Attempt, ...]] = {}
    reported = set(facts.tracker.completed_jobs) if facts.tracker is not None else set()
    for name, status, reason in failed:
        verdict, history = _verdict(spec, state, name, status, reason)
        if verdict is not None and verdict.retry and name in reported:
            verdict = replace(
                verdict, retry=False, attempt=verdict.attempt - 1, reason="it reported completion"
            )
        if verdict is None or not verdict.retry:
            why = reason
            if verdict is not None:
                total = spec.retry[name].policy.attempts
                why += f"; attempt {verdict.attempt} of {total} ({status.job_id}), not retried: "
                why += verdict.reason
            return _fail(state.stage, why, job=name, state=status.state, cancel=cancel, since=since)
        retries[name] = history
    kept = {k: v for k, v in since.items() if not any(k.endswith(f":{name}") for name in retries)}
    described = "; ".join(f"{name}: {history[-1].reason}" for name, history in retries.items())
    return Decision(Action.RETRY, state.stage, reason=f"retrying {described}", to_retry=retries, since=kept)


def _verdict(
    spec: RunSpec, state: RunState, name: str, status: JobStatus, reason: str
) -> tuple[RetryVerdict | None, tuple[Attempt, ...]]:
    """The retry verdict on a job's ended attempt, and its attempts with that outcome (and the next one)."""
    job = spec.retry.get(name)
    if job is None:
        return None, ()
    history = state.attempts.get(name) or (first_attempt(job.template, ""),)
    ended = replace(history[-1], job_id=status.job_id, state=status.state.value, reason=reason)
    history = (*history[:-1], ended)
    verdict = next_attempt(job.policy, job.template, history, status.state)
    if verdict.retry and verdict.resources is not None:
        growth = Attempt(
            verdict.attempt,
            reason=verdict.reason,
            memory_gb=verdict.resources.memory_mb / 1024,
            time_limit_minutes=verdict.resources.time_limit_minutes,
        )
        history = (*history, growth)
    return verdict, history


def _fail(
    stage: int,
    reason: str,
    *,
    job: str | None = None,
    state: JobState | None = None,
    cancel: tuple[str, ...] = (),
    since: Mapping[str, float] | None = None,
) -> Decision:
    return Decision(
        Action.FAIL,
        stage,
        reason=reason,
        failed_job=job,
        failed_state=state,
        to_cancel=cancel,
        record=True,
        since=since or {},
    )
