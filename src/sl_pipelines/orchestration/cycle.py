"""One polling cycle over many runs: one probe, then only the actions the decisions call for.

Everything the cycle needs to know comes from ONE ``Backend.probe`` call, whatever the number of runs.
Then, batched over all runs: failures are recorded in the trackers (one ``update_trackers`` call) BEFORE
their jobs are cancelled (one ``scancel``), so a cancelled sibling can never be blamed; successes clean
up; new runs claim their trackers (one call) and every submission of the cycle goes out as one
``submit_jobs`` call, after its stage was journaled. A problem with one run (a folder that cannot be
removed, a log that cannot be read, a job Slurm refuses) stays with that run.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import PurePosixPath

from sl_pipelines.adapters.tracker_ops import MANAGER_JOB
from sl_pipelines.core.arrays import Submission, plan_stage
from sl_pipelines.core.decisions import Action, Decision
from sl_pipelines.core.file_changes import FileChange
from sl_pipelines.core.job import Job
from sl_pipelines.core.lease import LeaseOutcome
from sl_pipelines.core.run_state import RunState
from sl_pipelines.core.sbatch import is_submit_limit
from sl_pipelines.core.seams import (
    Backend,
    ProbeRequest,
    ProbeResult,
    SubmissionReport,
    TrackerAction,
    TrackerOperation,
)
from sl_pipelines.core.usage import USAGE_FOLDER
from sl_pipelines.errors import SlPipelinesError
from sl_pipelines.orchestration.retries import prepare_retries
from sl_pipelines.orchestration.run import RECORD_NAME, USAGE_TRIES, FailureReport, PipelineRun, ProbeIndex
from sl_pipelines.vocabulary import ProcessingStatus

logger = logging.getLogger("sl_pipelines")

STDERR_TAIL_BYTES = 4096
REASON_LIMIT = 300


@dataclass(frozen=True)
class CycleReport:
    """What one cycle saw of the cluster.

    Attributes:
        slurm_problems: why Slurm did not answer (empty when it did); the runs waited.
        round_trips: remote commands the cycle's probe cost.
        lost_leases: the extra leases (see :func:`run_cycle`) that name another holder now, with its id.
    """

    slurm_problems: tuple[str, ...] = ()
    round_trips: int = 0
    lost_leases: Mapping[PurePosixPath, str] = field(default_factory=dict)


def merge_requests(
    runs: Sequence[PipelineRun],
    extra_leases: Sequence[tuple[PurePosixPath, str]] = (),
    ended: Sequence[PipelineRun] = (),
) -> ProbeRequest:
    """One probe request covering every run's jobs and trackers (and other leases to renew), and what
    the last jobs of ``ended`` runs used."""
    names: list[str] = []
    ids: list[str] = []
    trackers: list[PurePosixPath] = []
    leases: list[tuple[PurePosixPath, str]] = list(extra_leases)
    usage: list[tuple[str, PurePosixPath]] = []
    for run in runs:
        request = run.probe_request()
        names += request.job_names
        ids += request.job_ids
        trackers += request.tracker_paths
        leases += request.leases
        usage += request.usage
    for run in ended:
        usage += run.usage_request()
    return ProbeRequest(  # each item once, in the order first asked for
        job_names=tuple(dict.fromkeys(names)),
        job_ids=tuple(dict.fromkeys(ids)),
        tracker_paths=tuple(dict.fromkeys(trackers)),
        leases=tuple(dict.fromkeys(leases)),
        usage=tuple(dict.fromkeys(usage)),
    )


class Unchanged:
    """What each run's last decision saw, so that a run whose facts did not change is not decided again.

    A run is skipped only when its last decision was to wait, with nothing found, nothing stale and NO
    timer pending (a decision depends on the clock only through the run's ``since`` timers: with none,
    the same facts give the same decision), nothing changed the run since (its state is the same object),
    and this probe shows the same status for each of its job ids, the same tracker text and the same
    Slurm problems. A run with a job whose id is not known, or with a pending timer, is always decided.
    """

    def __init__(self) -> None:
        self._seen: weakref.WeakKeyDictionary[PipelineRun, tuple[RunState, tuple[object, ...]]]
        self._seen = weakref.WeakKeyDictionary()

    def inputs(self, run: PipelineRun, result: ProbeResult, index: ProbeIndex) -> tuple[object, ...] | None:
        """What a decision of ``run`` reads from this probe (None: it must be decided)."""
        ids = run.state.job_ids
        names = run.spec.stages.get(run.stage, ())
        if any(name not in ids for name in names):
            return None
        path = run.remote_tracker_path
        jobs = tuple(index.by_id.get(ids[name]) for name in names)
        return (jobs, result.trackers.get(path), result.unreadable.get(path), result.slurm_problems)

    def same(self, run: PipelineRun, inputs: tuple[object, ...] | None) -> bool:
        """True when ``run`` was last decided on these inputs, waiting without a timer, and is unchanged."""
        seen = self._seen.get(run)
        return inputs is not None and seen is not None and seen[0] is run.state and seen[1] == inputs

    def note(self, run: PipelineRun, inputs: tuple[object, ...] | None, decision: Decision) -> None:
        """Remembers a decision's inputs when deciding again on them would change nothing."""
        pending = decision.since or decision.found_ids or decision.stale
        quiet = decision.action is Action.WAIT and not pending
        if inputs is not None and quiet:
            self._seen[run] = (run.state, inputs)
        else:
            self._seen.pop(run, None)


def run_cycle(
    backend: Backend,
    runs: Sequence[PipelineRun],
    clock: Callable[[], float] = time.monotonic,
    extra_leases: Sequence[tuple[PurePosixPath, str]] = (),
    unchanged: Unchanged | None = None,
) -> CycleReport:
    """Advances every running run by one cycle (``clock`` gives monotonic seconds for the run's timers).

    ``extra_leases`` (lease file, holder id) are renewed by the same probe, such as a workflow's session
    locks; those found naming another holder come back in the report. With ``unchanged`` (kept from cycle
    to cycle), runs whose facts did not change since they last waited are not decided again.

    What ended jobs used is asked by the next cycle's probe: pass runs that ended in again (``runs`` may
    hold finished runs whose ``usage_wanted`` is not empty). When no cycle follows, :func:`gather_usage`
    asks for the last jobs' usage.

    Raises:
        ServerError, SchedulerError: the server could not be reached (nothing was decided).
    """
    active = [run for run in runs if run.is_running]
    ended = [run for run in runs if not run.is_running and run.usage_wanted]
    take_leases(backend, [run for run in active if not run.lease_held])
    active = [run for run in active if run.is_running]
    if not active:
        return CycleReport()
    result = backend.probe(merge_requests(active, extra_leases, ended))
    for run in active if result.lost_leases else ():
        if run.lease_path in result.lost_leases:
            run.hand_over(result.lost_leases[run.lease_path])
    active = [run for run in active if run.is_running]
    for run in [*active, *ended]:
        run.take_usage(result)
    now = clock()
    index = ProbeIndex.of(result)
    decisions = []
    for run in active:
        inputs = unchanged.inputs(run, result, index) if unchanged is not None else None
        if unchanged is not None and unchanged.same(run, inputs):
            continue  # it would wait again, exactly as it did
        decisions.append((run, run.decide(result, now, index)))
        if unchanged is not None:
            unchanged.note(run, inputs, decisions[-1][1])
    _cancel_stale(backend, decisions)
    conclude_failures(backend, [(r, d) for r, d in decisions if d.action in (Action.FAIL, Action.ABORT)])
    for run, decision in decisions:
        if decision.action is Action.SUCCEED:
            _succeed(backend, run)
    submissions = [(r, d) for r, d in decisions if d.action is Action.SUBMIT]
    submissions += prepare_retries(backend, [(r, d) for r, d in decisions if d.action is Action.RETRY])
    if submissions:
        _submit(backend, submissions)
    flush_records(backend, [*active, *ended])
    extra = {path for path, _ in extra_leases}
    lost = {path: holder for path, holder in result.lost_leases.items() if path in extra}
    return CycleReport(result.slurm_problems, result.round_trips, lost)


def take_leases(
    backend: Backend, runs: Sequence[PipelineRun], *, force: bool = False, hand_over: bool = True
) -> None:
    """Takes the leases of runs this manager is to drive (ONE call); a run another live manager drives is
    left to it (handed over, or only noted in ``lease_holder`` when not ``hand_over``), never driven twice."""
    if not runs:
        return
    outcomes = list(backend.take_leases([run.lease_request(force=force) for run in runs]))
    gone = [i for i, outcome in enumerate(outcomes) if not outcome.taken and holder_gone(outcome)]
    if gone:  # a manager of this computer that no longer runs (killed, crashed): its lease is void
        again = backend.take_leases([runs[i].lease_request(force=True) for i in gone])
        for index, outcome in zip(gone, again, strict=True):
            outcomes[index] = outcome
    for run, outcome in zip(runs, outcomes, strict=True):
        if outcome.taken:
            run.lease_held = True
            if outcome.took_over:
                logger.warning("%s: took the run over from %s", run.describe(), outcome.describe_holder())
        elif outcome.holder is not None:
            run.lease_holder = outcome.describe_holder()
            if hand_over:
                run.hand_over(run.lease_holder)
        else:
            logger.warning("%s: could not take the run's lease yet; trying again next cycle", run.describe())


def holder_gone(outcome: LeaseOutcome) -> bool:
    """True when the lease's holder was a process of this computer that has ended."""
    info = outcome.holder or {}
    if info.get("host") != socket.gethostname() or not info.get("pid", "").isdigit():
        return False
    try:
        os.kill(int(info["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(int(info["pid"]))


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as stream:
            return stream.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def gather_usage(
    backend: Backend, runs: Sequence[PipelineRun], sleep: Callable[[float], None] = time.sleep
) -> None:
    """Asks what the last jobs of ended runs used when no further cycle will come (ONE call for all of
    them), and writes their records (a success's job folders go with it).

    Jobs that just ended may not be in ``sacct`` yet (slurmdbd lags behind the controller): those are
    asked again after 1.5 s, then 3 s (:data:`USAGE_TRIES` calls at most), then recorded from their own
    figures.
    """
    ended = wanting = [run for run in runs if run.usage_wanted and not run.is_running]
    for attempt in range(USAGE_TRIES):
        if not wanting:
            break
        if attempt:
            sleep(1.5 * attempt)  # slurmdbd shows array tasks ~1.6 s after squeue does (testbed)
        request = ProbeRequest(usage=tuple(i for run in wanting for i in run.usage_request()))
        try:
            result = backend.probe(request)
        except SlPipelinesError as exc:
            logger.warning("Could not read what the jobs used on %s (%s).", backend.name, exc)
            result = ProbeResult()
        for run in wanting:
            run.take_usage(result, last=attempt == USAGE_TRIES - 1)
        wanting = [run for run in wanting if run.usage_wanted]
    flush_records(backend, ended)


def flush_records(backend: Backend, runs: Sequence[PipelineRun]) -> None:
    """Writes the server's record of every run whose state changed (and its pending cleanups): ONE call.

    A record that could not be written is tried again with the next change; the local journal has it.
    """
    dirty = [run for run in runs if run.record_dirty]
    if not dirty:
        return
    changes = [(run, change) for run in dirty for change in run.record_changes()]
    try:
        results = backend.change_files([change for _, change in changes])
    except SlPipelinesError as exc:
        logger.warning("Could not write the run records on %s yet (%s); trying again.", backend.name, exc)
        return
    failed: dict[int, str] = {}
    for (run, _), problem in zip(changes, results, strict=True):
        if problem:
            failed.setdefault(id(run), problem)
    for run in dirty:
        run.pending_changes.clear()
        run.record_dirty = id(run) in failed
        if id(run) in failed:
            logger.warning("%s: %s", run.describe(), failed[id(run)])


def _cancel_stale(backend: Backend, decisions: Sequence[tuple[PipelineRun, Decision]]) -> None:
    """Cancels requeued copies of jobs that already reported completion (their work must not run twice)."""
    stale = [job_id for _, decision in decisions for job_id in decision.stale]
    if not stale:
        return
    logger.warning("Cancelling requeued copies of finished jobs: %s", ", ".join(stale))
    try:
        backend.cancel(stale)
    except SlPipelinesError as exc:
        logger.warning("Could not cancel %s yet (%s); trying again next cycle.", ", ".join(stale), exc)


def conclude_failures(backend: Backend, items: Sequence[tuple[PipelineRun, Decision]]) -> None:
    """Records each failure in its tracker, THEN cancels the jobs that may still run, then ends the runs.

    A record that could not be made for a passing reason (the lock was busy) leaves its run for the next
    cycle, which decides again; so does a cancel that did not go through.
    """
    if not items:
        return
    pending = {id(run) for run, _ in items}
    notes = _record(backend, items, pending)
    ready = [(run, decision) for run, decision in items if id(run) in pending]
    ids = [job_id for _, decision in ready for job_id in decision.to_cancel]
    if ids:
        try:
            backend.cancel(ids)
        except SlPipelinesError as exc:
            logger.warning("Could not cancel jobs %s yet (%s); trying again next cycle.", ", ".join(ids), exc)
            return
    for run, decision in ready:
        status = ProcessingStatus.FAILED if decision.action is Action.FAIL else ProcessingStatus.ABORTED
        run.finish(status, _failure_report(backend, run, decision, notes.get(id(run), "")))


def _record(
    backend: Backend, items: Sequence[tuple[PipelineRun, Decision]], pending: set[int]
) -> dict[int, str]:
    """Writes the failures the trackers do not hold yet; returns notes on those that could not be written."""
    to_record = [(r, d) for r, d in items if d.action is Action.FAIL and d.record and r.stage > 0]
    if not to_record:
        return {}
    operations = [
        TrackerOperation(
            TrackerAction.ERROR,
            run.remote_tracker_path,
            run.manager_id,
            job=decision.failed_job or MANAGER_JOB,
            reason=decision.reason[:REASON_LIMIT],
        )
        for run, decision in to_record
    ]
    notes: dict[int, str] = {}
    for (run, _), outcome in zip(to_record, backend.update_trackers(operations), strict=True):
        if outcome.ok:
            continue
        if outcome.transient:
            pending.discard(id(run))
            run.apply(note=f"could not record the failure yet: {outcome.error}")
        else:
            notes[id(run)] = f" (not recorded in the tracker: {outcome.error})"
    return notes


def _failure_report(backend: Backend, run: PipelineRun, decision: Decision, note: str) -> FailureReport:
    """The reason, the job it is pinned on, and the tail of that job's stderr (when the run has that job)."""
    reason = decision.reason + note
    resolved = run.resolved_job(decision.failed_job) if decision.failed_job else None
    if resolved is None:
        return FailureReport(reason, job=decision.failed_job)
    path = run.job(resolved.name).stderr_path  # the last attempt's log
    try:
        tail = backend.read_text(path, tail_bytes=STDERR_TAIL_BYTES) or ""
    except SlPipelinesError as exc:
        logger.warning("Could not read %s: %s", path, exc)
        tail = ""
    return FailureReport(reason, resolved.name, path, "\n".join(tail.splitlines()[-20:]))


def _succeed(backend: Backend, run: PipelineRun) -> None:
    """Ends a run that succeeded; its job folders go with the record's next write (the record stays)."""
    if not run.keep_job_logs:  # the usage files go once they were read (see PipelineRun.take_usage)
        keep = (RECORD_NAME, USAGE_FOLDER)
        run.pending_changes.append(FileChange(run.resolved.jobs_folder, None, keep=keep))
        run.usage_files_done = True
        run.release_usage_files()
    run.finish(ProcessingStatus.SUCCEEDED, None)


def _submit(backend: Backend, submissions: list[tuple[PipelineRun, Decision]]) -> None:
    claimed = claim_trackers(backend, [run for run, _ in submissions if run.stage == 0])
    batch: list[tuple[PipelineRun, Job]] = []
    plan: list[Submission] = []
    for run, decision in submissions:
        if run.stage == 0 and id(run) not in claimed:
            continue
        attempts = run.first_attempts(decision.to_submit, datetime.now(tz=UTC).isoformat(timespec="seconds"))
        run.apply(stage=decision.stage, since={}, attempts=attempts)  # the intent is journaled BEFORE sbatch
        batch.extend((run, run.job(name)) for name in decision.to_submit)
        plan.extend(_plan(backend, run, decision.to_submit))
    if not batch:
        return
    flush_records(backend, list({id(run): run for run, _ in batch}.values()))  # the server's record too
    report = backend.submit_jobs(plan)
    apply_submission(backend, batch, report)


def _plan(backend: Backend, run: PipelineRun, names: Sequence[str]) -> tuple[Submission, ...]:
    """The stage's jobs to submit as arrays (one per resource group) and single jobs."""
    positions = {name: index for index, name in enumerate(run.spec.stages[run.stage])}
    jobs = [(positions[name], run.job(name)) for name in names if run.slurm_name(name) == name]
    retried = tuple(Submission(run.job(name)) for name in names if run.slurm_name(name) != name)
    folder = run.resolved.jobs_folder
    size = 0 if run.state.limited else backend.max_array_size  # under a submit limit: one job at a time
    return (*plan_stage(jobs, name=run.stage_array_name, folder=folder, max_array_size=size), *retried)


def claim_trackers(backend: Backend, runs: list[PipelineRun]) -> set[int]:
    """Locks each new run's tracker to its manager before anything is submitted, in ONE call.

    Returns the ids of the runs whose tracker is now theirs. A refused claim fails its run (the tracker
    is another run's: nothing is recorded in it); a busy lock leaves the run for the next cycle.
    """
    if not runs:
        return set()
    operations = [
        TrackerOperation(TrackerAction.CLAIM, run.remote_tracker_path, run.manager_id, run.resolved.job_count)
        for run in runs
    ]
    claimed = set()
    for run, outcome in zip(runs, backend.update_trackers(operations), strict=True):
        if outcome.ok:
            claimed.add(id(run))
        elif outcome.transient:
            run.apply(note=f"waiting to claim the tracker: {outcome.error}")
        else:
            run.finish(
                ProcessingStatus.FAILED, FailureReport(f"Could not claim the tracker: {outcome.error}")
            )
    return claimed


def apply_submission(
    backend: Backend, batch: list[tuple[PipelineRun, Job]], report: SubmissionReport
) -> None:
    """Journals the ids (one write per run); a refused job fails its run (its other jobs cancelled)."""
    runs = {id(run): run for run, _ in batch}
    refused: list[tuple[PipelineRun, Decision]] = []
    for key, run in runs.items():
        names = [job.name for r, job in batch if id(r) == key]  # Slurm's names (a retry's has its attempt)
        ids = {run.job_name(n): report.submitted[n] for n in names if n in report.submitted}
        if ids:
            run.apply(job_ids={**run.state.job_ids, **ids})
        held = [n for n in names if n in report.deferred or n in report.unknown]
        if held:
            why = report.deferred.get(held[0], "the outcome is unknown; it is looked up by name next cycle")
            logger.info("%s: %d job(s) not submitted yet (%s)", run.describe(), len(held), why)
            limited = run.state.limited or any(is_submit_limit(report.deferred.get(n, "")) for n in held)
            run.apply(note=f"{len(held)} job(s) held back: {why}", limited=limited)
        bad = next((n for n in names if n in report.refused), None)
        if bad is not None:
            cancel = tuple(run.state.job_ids[n] for n in run.spec.stages[run.stage] if n in run.state.job_ids)
            decision = Decision(
                Action.FAIL, run.stage, reason=report.refused[bad], failed_job=run.job_name(bad), record=True
            )
            refused.append((run, replace(decision, to_cancel=cancel)))
    conclude_failures(backend, refused)


def cancel_runs(backend: Backend, runs: Sequence[PipelineRun], reason: str) -> None:
    """Cancels running runs (Ctrl-C): their jobs, found by id AND by name, and records why in each tracker.

    Jobs whose sbatch was interrupted have no journaled id; looking the stage's names up finds them.
    """
    active = [run for run in runs if run.is_running]
    if not active:
        return
    started = [run for run in active if run.stage > 0]
    found = backend.probe(merge_requests(started)) if started else None
    items = []
    for run in active:
        ids = set(run.state.job_ids.values())
        if found is not None:
            names = {run.slurm_name(name) for name in run.spec.stages.get(run.stage, ())}
            ids |= {s.job_id for s in found.jobs if s.name in names and not s.state.is_terminal}
        decision = Decision(Action.FAIL, run.stage, reason=reason, record=True, to_cancel=tuple(sorted(ids)))
        items.append((run, decision))
    conclude_failures(backend, items)
    flush_records(backend, active)
