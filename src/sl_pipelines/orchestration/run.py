"""PipelineRun: one run's resolved shape, its journal and its state, and the one place that state changes.

The pure decision (:func:`sl_pipelines.core.decisions.decide`) says what a cycle changes; a run applies
it through :meth:`PipelineRun.apply` (journaling what must survive a crash) and :meth:`PipelineRun.finish`.
Nothing else writes a run's stage, status or job ids.
"""

from __future__ import annotations

import functools
import getpass
import logging
import os
import re
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import Any

from sl_pipelines.core.arrays import array_name
from sl_pipelines.core.decisions import (
    Action,
    Decision,
    Facts,
    Patience,
    RunSpec,
    RunState,
    decide,
    latest_by_name,
)
from sl_pipelines.core.file_changes import FileChange
from sl_pipelines.core.job import Job
from sl_pipelines.core.lease import LEASE_NAME, Holder, LeaseRequest
from sl_pipelines.core.resolve import JOB_PREFIX, ResolvedJob, ResolvedPipeline
from sl_pipelines.core.retry import (
    Attempt,
    JobRetry,
    attempt_job,
    attempt_name,
    first_attempt,
    within_partition,
)
from sl_pipelines.core.seams import Backend, ProbeRequest, ProbeResult
from sl_pipelines.core.states import JobState, JobStatus
from sl_pipelines.core.tracker_state import TrackerState
from sl_pipelines.core.tracker_text import parse_tracker_text
from sl_pipelines.core.usage import USAGE_FILE_PREFIX, USAGE_FOLDER, JobFacts, usage_record
from sl_pipelines.errors import TrackerCorruptError
from sl_pipelines.orchestration.journal import RunJournal, RunLock, data_dir
from sl_pipelines.vocabulary import ProcessingPipelines, ProcessingStatus

logger = logging.getLogger("sl_pipelines")

_PERSISTENT = ("stage", "status", "job_ids", "reason", "attempts")
RECORD_NAME = "run.json"
"""The run's record on the server: ``<working_root>/sl_jobs/<token>/run.json`` (the journal's JSON)."""

USAGE_TRIES = 3
"""Probes that ask for what an ended job used before the manager gives up on it (nothing answered)."""


@dataclass(frozen=True)
class ProbeIndex:
    """A probe's jobs by id and by name, built once per cycle for all its runs (not once per run)."""

    by_id: Mapping[str, JobStatus]
    by_name: Mapping[str, tuple[JobStatus, ...]]

    @classmethod
    def of(cls, result: ProbeResult) -> ProbeIndex:
        """Indexes a probe's answer."""
        by_name: dict[str, list[JobStatus]] = {}
        for status in result.jobs:
            by_name.setdefault(status.name, []).append(status)
        return cls({s.job_id: s for s in result.jobs}, {k: tuple(v) for k, v in by_name.items()})


@dataclass(frozen=True)
class FailureReport:
    """Why a pipeline failed: the reason, the job it is pinned on, and the tail of that job's stderr."""

    reason: str
    job: str | None = None
    stderr_path: PurePosixPath | None = None
    stderr_tail: str = ""


class PipelineRun:
    """One run of one pipeline on one session (or dataset): what it is, where it stands, and its journal.

    Args:
        resolved: every stage and job, decided at construction.
        server: the backend the jobs run on.
        journal: the run's journal (its saved state is the starting state).
        keep_job_logs: keep job folders and logs after success.
        patience: how long uncertain facts are waited out (default: the backend's report grace).
        durable: journal every change and hold the run's lock so that no second manager drives it
            (False for a dry run, which changes nothing).
    """

    def __init__(
        self,
        resolved: ResolvedPipeline,
        server: Backend,
        journal: RunJournal,
        *,
        keep_job_logs: bool = False,
        patience: Patience | None = None,
        durable: bool = True,
    ) -> None:
        self.resolved = resolved
        self.server = server
        self.journal = journal
        self.keep_job_logs = keep_job_logs
        self.patience = patience or Patience(report=server.report_grace_seconds)
        self.pipeline: ProcessingPipelines = resolved.definition.pipeline
        self.manager_id = resolved.manager_id
        self.remote_tracker_path = resolved.tracker_path
        self.local_tracker_path = data_dir() / "trackers" / resolved.token / resolved.definition.tracker
        self.spec = RunSpec(
            manager_id=resolved.manager_id,
            tracker_path=str(resolved.tracker_path),
            stages={n: tuple(r.name for r in jobs) for n, jobs in resolved.stages.items()},
            retry={
                r.name: JobRetry(
                    within_partition(r.retry, server.partition_limits(r.job.resources.partition)),
                    r.job.resources,
                )
                for r in resolved.all_jobs()
                if r.retry.retries
            },
        )
        self.state = RunState(
            stage=journal.stage,
            status=ProcessingStatus[journal.status],
            job_ids=dict(journal.job_ids),
            reason=journal.reason,
            attempts={
                name: tuple(Attempt.from_dict(item) for item in items)
                for name, items in journal.attempts.items()
            },
        )
        self.failure: FailureReport | None = FailureReport(journal.reason) if journal.reason else None
        self.job_states: dict[str, JobStatus] = {}  # replaced by each cycle, never changed in place
        self.tracker: TrackerState | None = None
        self._last_tracker_text: str | None = None
        self._durable = durable
        self.record_dirty = durable  # the server's record is written with the first submission
        self.pending_changes: list[FileChange] = []  # cleanups to make with the next record write
        self.holder = process_holder()
        self.lease_held = False  # this manager holds the run's lease on the server (renewed each probe)
        self._last_request: tuple[RunState, bool, str, ProbeRequest] | None = None
        self.lease_holder = ""  # who holds it otherwise, as last seen
        # job id → (job name, Slurm's final state, probes left): ended jobs whose usage is not recorded yet
        self.usage_wanted: dict[str, tuple[str, str, int]] = {}
        self.usage_files_done = False  # a success's usage files go once nothing is wanted from them
        self._lock = RunLock(resolved.token)
        if durable and self.is_running:
            self._lock.acquire()
        self.local_tracker_path.parent.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------------------------- views
    @property
    def status(self) -> ProcessingStatus:
        """RUNNING until the run succeeded, failed or was aborted."""
        return self.state.status

    @property
    def stage(self) -> int:
        """The stage currently running (0 before the first submission)."""
        return self.state.stage

    @property
    def is_running(self) -> bool:
        """True until the run has succeeded, failed or been aborted."""
        return self.state.status is ProcessingStatus.RUNNING

    @property
    def session(self) -> str:
        """The (main) session's name."""
        return self.resolved.session.session

    @property
    def animal(self) -> str:
        """The (main) session's animal."""
        return self.resolved.session.animal

    @property
    def project(self) -> str:
        """The (main) session's project."""
        return self.resolved.session.project

    def resolved_job(self, name: str) -> ResolvedJob | None:
        """The resolved job with this name (or this Slurm job id), or None when the run has no such job."""
        names = {job_id: job_name for job_name, job_id in self.state.job_ids.items()}
        wanted = names.get(name, name)
        return next((r for r in self.resolved.all_jobs() if r.name == wanted), None)

    def job(self, name: str) -> Job:
        """The job with this name (it must be one of the run's), as its current attempt runs it."""
        resolved = self.resolved_job(name)
        if resolved is None:
            raise KeyError(name)
        attempts = self.state.attempts.get(resolved.name)
        return attempt_job(resolved.job, attempts[-1]) if attempts else resolved.job

    def slurm_name(self, name: str) -> str:
        """The Slurm job name of the job's current attempt."""
        attempts = self.state.attempts.get(name)
        return attempt_name(name, attempts[-1].attempt) if attempts else name

    def job_name(self, slurm_name: str) -> str:
        """The run's job that a Slurm job name (of any of its attempts) stands for."""
        base, dot, attempt = slurm_name.rpartition(".a")
        return base if dot and attempt.isdigit() else slurm_name

    def first_attempts(self, names: Sequence[str], now: str) -> dict[str, tuple[Attempt, ...]]:
        """The attempts with attempt 1 of each retryable job of ``names`` that has none yet."""
        attempts = dict(self.state.attempts)
        for name in names:
            if name in self.spec.retry and name not in attempts:
                attempts[name] = (first_attempt(self.spec.retry[name].template, now),)
        return attempts

    @functools.cached_property
    def lease_path(self) -> PurePosixPath:
        """The run's lease on the server: who drives it, and their heartbeat (a run's folder never moves:
        built once, not in every cycle)."""
        return self.resolved.jobs_folder / LEASE_NAME

    def lease_request(self, *, force: bool = False) -> LeaseRequest:
        """A request for this run's lease by this manager."""
        return LeaseRequest(self.resolved.jobs_folder, self.holder, force=force)

    @property
    def record_path(self) -> PurePosixPath:
        """The run's record on the server."""
        return self.resolved.jobs_folder / RECORD_NAME

    def record_changes(self) -> list[FileChange]:
        """What to write on the server now: pending cleanups, then the record as the journal has it."""
        return [*self.pending_changes, FileChange(self.record_path, self.journal.to_json())]

    def describe(self) -> str:
        """One line: pipeline, session, stage and status."""
        total = len(self.resolved.stages)
        text = f"{self.pipeline.short_name} {self.project}/{self.animal}/{self.session}: "
        text += f"stage {self.stage}/{total} {self.status.name}"
        if self.failure is not None:
            text += f": {self.failure.reason}"
        return text

    # ------------------------------------------------------------------------------------- a cycle
    @property
    def stage_array_name(self) -> str:
        """The Slurm name of the current stage's arrays (their tasks are found by position)."""
        return array_name(f"{JOB_PREFIX}-{self.resolved.token}", self.stage)

    def probe_request(self) -> ProbeRequest:
        """This run's part of the cycle's probe: the current stage's jobs (by id where known) and tracker.

        Jobs whose ids were never seen are looked up by their own name and by the stage's array name.
        """
        held = (self.state, self.lease_held, self.holder.holder_id)
        known = self._last_request
        if known is not None and not self.usage_wanted and known[0] is held[0] and known[1:3] == held[1:]:
            return known[3]  # nothing it is built from changed (the state is replaced, never changed)
        names = self.spec.stages.get(self.stage, ())
        ids = tuple(self.state.job_ids[n] for n in names if n in self.state.job_ids)
        unnamed = tuple(self.slurm_name(n) for n in names if n not in self.state.job_ids)
        lookups = (*unnamed, self.stage_array_name) if unnamed else ()
        leases = ((self.lease_path, self.holder.holder_id),) if self.lease_held else ()
        request = ProbeRequest(
            job_names=lookups,
            job_ids=ids,
            tracker_paths=(self.remote_tracker_path,),
            leases=leases,
            usage=self.usage_request(),
        )
        self._last_request = (*held, request) if not request.usage else None  # usage is asked once
        return request

    # ------------------------------------------------------------------------------------- usage
    def usage_request(self) -> tuple[tuple[str, PurePosixPath], ...]:
        """(job id, the job's own usage file) of the ended jobs whose usage is not recorded yet."""
        if not self.usage_wanted:  # the common case, in every cycle of every run
            return ()
        folder = self.resolved.jobs_folder / USAGE_FOLDER
        return tuple((job_id, folder / f"{USAGE_FILE_PREFIX}{job_id}.json") for job_id in self.usage_wanted)

    def _want_usage(self) -> None:
        """Notes the jobs this cycle saw end: the next probe (or the last one) asks what they used."""
        for name, status in self.job_states.items():
            known = status.job_id in self.journal.usage or status.job_id in self.usage_wanted
            if status.state.is_terminal and not known and re.fullmatch(r"\d+(_\d+)?", status.job_id):
                self.usage_wanted[status.job_id] = (name, status.state.value, USAGE_TRIES)

    def take_usage(self, result: ProbeResult, *, last: bool = False) -> None:
        """Records what the asked-for jobs used (journaled with the run's record); a job nothing answered
        for is asked again, :data:`USAGE_TRIES` times in all (not after the ``last`` ask). Once nothing
        is wanted any more, a succeeded run's job folders may go."""
        recorded: dict[str, dict[str, Any]] = {}
        for job_id, (name, state, tries) in list(self.usage_wanted.items()):
            measured = result.usage.get(job_id)
            if measured is None or measured.pending:
                if tries > 1 and not last:
                    self.usage_wanted[job_id] = (name, state, tries - 1)
                    continue
                del self.usage_wanted[job_id]
                if measured is None:
                    continue
            else:
                del self.usage_wanted[job_id]
            recorded[job_id] = usage_record(measured, self._job_facts(job_id, name, state))
        if recorded:
            if self._durable:
                self.journal = self.journal.save(usage={**self.journal.usage, **recorded})
            self.record_dirty = True
        self.release_usage_files()

    def release_usage_files(self) -> None:
        """A succeeded run's usage files go with the next record write, once no job's usage is wanted."""
        if not self.usage_wanted and self.usage_files_done:
            self.pending_changes.append(FileChange(self.resolved.jobs_folder / USAGE_FOLDER))
            self.usage_files_done = False
            self.record_dirty = True

    def _job_facts(self, job_id: str, name: str, state: str) -> JobFacts:
        resolved = self.resolved_job(name)
        resources = resolved.job.resources if resolved is not None else None
        attempts = self.journal.attempts.get(name, ())
        attempt = next((int(a.get("attempt", 1)) for a in attempts if a.get("job_id") == job_id), 1)
        return JobFacts(
            name=name,
            stage=resolved.stage if resolved is not None else self.stage,
            attempt=attempt,
            state=state,
            cpus=resources.cpus if resources else 1,
            memory_mb=float(resources.memory_mb) if resources else 0.0,
            time_limit_minutes=resources.time_limit_minutes if resources else 0,
        )

    def decide(self, result: ProbeResult, now: float, index: ProbeIndex | None = None) -> Decision:
        """Reads this run's part of a probe, decides, and applies the found job ids and the timers.

        ``index`` is the probe's jobs by id and by name, built once for all the runs of a cycle.
        """
        facts = self._facts(result, now, index or ProbeIndex.of(result))
        decision = decide(self.spec, self.state, facts, self.patience)
        note = decision.reason if decision.action is Action.WAIT else ""
        changes: dict[str, Any] = {"since": decision.since, "note": note}
        if decision.found_ids:
            logger.info("%s: found submitted jobs %s", self.describe(), sorted(decision.found_ids))
            changes["job_ids"] = {**self.state.job_ids, **decision.found_ids}
        ended = self._ended_attempts(facts)
        if ended:
            changes["attempts"] = {**self.state.attempts, **ended}
        self.apply(**changes)
        self._want_usage()
        return decision

    def _ended_attempts(self, facts: Facts) -> dict[str, tuple[Attempt, ...]]:
        """The attempts whose end this cycle shows (Slurm's final state of the job's current attempt)."""
        ended = {}
        for name, items in self.state.attempts.items():
            status = facts.jobs.get(name)
            if not items or items[-1].state or status is None or not status.state.is_terminal:
                continue
            if status.state.may_requeue:  # Slurm may requeue it: its end is the retry decision's to say
                continue
            if items[-1].job_id not in ("", status.job_id):
                continue
            reason = "" if status.reason in ("", "None", "(null)") else status.reason
            last = replace(items[-1], job_id=status.job_id, state=status.state.value, reason=reason)
            ended[name] = (*items[:-1], last)
        return ended

    def _facts(self, result: ProbeResult, now: float, index: ProbeIndex) -> Facts:
        names = self.spec.stages.get(self.stage, ())
        by_id = index.by_id
        jobs: dict[str, JobStatus] = {}
        for name in names:
            job_id = self.state.job_ids.get(name)
            if job_id is not None and job_id in by_id:
                jobs[name] = replace(by_id[job_id], name=name)
            elif job_id is not None and result.slurm_answered:
                jobs[name] = JobStatus(job_id, name, JobState.NOT_FOUND)
        unnamed = {n for n in names if n not in self.state.job_ids}
        if unnamed:
            found = [
                replace(s, name=name)
                for name in unnamed
                for s in index.by_name.get(self.slurm_name(name), ())
            ]
            array = index.by_name.get(self.stage_array_name, ())
            first = {n for n in unnamed if self.slurm_name(n) == n}  # a retry never runs in the array
            found += _array_tasks(array, self.stage_array_name, names, first)
            jobs.update(latest_by_name(found))
        self.job_states = jobs
        problem, corrupt = self._read_tracker(result)
        return Facts(
            jobs=jobs,
            tracker=self.tracker,
            now=now,
            tracker_problem=problem,
            tracker_corrupt=corrupt,
            slurm_answered=result.slurm_answered,
            slurm_problem="; ".join(result.slurm_problems),
        )

    def _read_tracker(self, result: ProbeResult) -> tuple[str, bool]:
        path = self.remote_tracker_path
        if path in result.unreadable:
            return f"Tracker {path} cannot be read: {result.unreadable[path]}", False
        text = result.trackers.get(path)
        try:
            self.tracker = None if text is None else parse_tracker_text(text, path=path)
        except TrackerCorruptError as exc:
            self.tracker = None
            return str(exc), True
        if text is not None and text != self._last_tracker_text:
            self.local_tracker_path.write_text(text, encoding="utf-8")  # only when it changed
            self._last_tracker_text = text
        return "", False

    # ------------------------------------------------------------------------------------- changes
    def apply(self, **changes: Any) -> None:
        """Replaces the run's state with these changes: the one place a run's state changes.

        What must survive a crash (stage, status, job ids, reason) is journaled atomically first.
        """
        updated = _with_attempt_ids(replace(self.state, **changes))
        persistent = {key: getattr(updated, key) for key in _PERSISTENT}
        if self._durable and any(persistent[key] != getattr(self.state, key) for key in _PERSISTENT):
            self.journal = self.journal.save(
                stage=updated.stage,
                status=updated.status.name,
                job_ids=dict(updated.job_ids),
                reason=updated.reason,
                attempts={
                    name: [attempt.to_dict() for attempt in items] for name, items in updated.attempts.items()
                },
            )
            self.record_dirty = True
        self.state = updated

    def finish(self, status: ProcessingStatus, report: FailureReport | None) -> None:
        """Ends the run: journals its outcome, and lets its lease (with the record's write) and lock go."""
        self.failure = report
        reason = report.reason if report else ""
        self.apply(status=status, reason=reason, failed_job=report.job if report else None, note="")
        if self.lease_held:
            self.pending_changes.append(FileChange(self.lease_path))
            self.lease_held = False
        self._lock.release()
        log = logger.info if status is ProcessingStatus.SUCCEEDED else logger.warning
        log("%s", self.describe())

    def close(self) -> None:
        """Lets the run's lock go without ending the run (another manager may then resume it)."""
        self._lock.release()

    @property
    def detached(self) -> bool:
        """True once the run was handed to the cluster: no manager drives it any more."""
        return self.journal.mode == "detached" and self.stage > 0

    def hand_to_cluster(self) -> None:
        """The run is the cluster's now (every stage and its settling job submitted): record that, and let
        the lease and the lock go; this manager stops watching it."""
        if self._durable:
            self.journal = self.journal.save(mode="detached")
        self.record_dirty = True
        if self.lease_held:
            self.pending_changes.append(FileChange(self.lease_path))
            self.lease_held = False
        self._lock.release()

    def hand_over(self, holder: str) -> None:
        """Another manager took the run's lease: this one stops driving it and leaves the server alone."""
        reason = f"Another manager ({holder or 'unknown'}) took this run over; it goes on there"
        self.lease_held = False
        self.failure = FailureReport(reason)
        self.apply(status=ProcessingStatus.ABORTED, reason=reason, note="")
        self.record_dirty = False  # the server's record is the new holder's to write now
        self.usage_wanted.clear()  # and the usage of its jobs is the new holder's to record
        self._lock.release()
        logger.warning("%s", self.describe())


def _with_attempt_ids(state: RunState) -> RunState:
    """The state with each retryable job's current attempt carrying the job id the run knows for it."""
    stale = {
        name: items
        for name, items in state.attempts.items()
        if items and name in state.job_ids and items[-1].job_id != state.job_ids[name]
    }
    if not stale:
        return state
    attempts = dict(state.attempts)
    for name, items in stale.items():
        attempts[name] = (*items[:-1], replace(items[-1], job_id=state.job_ids[name]))
    return replace(state, attempts=attempts)


_HOLDER: Holder | None = None


def process_holder(stale_after: float = 300.0) -> Holder:
    """This process's identity as a lease holder (one per manager process)."""
    global _HOLDER  # noqa: PLW0603 - one identity per process, made on first use
    if _HOLDER is None:
        _HOLDER = Holder(uuid.uuid4().hex, getpass.getuser(), socket.gethostname(), os.getpid(), stale_after)
    elif _HOLDER.stale_after != stale_after:
        _HOLDER = replace(_HOLDER, stale_after=stale_after)
    return _HOLDER


def _array_tasks(
    statuses: Sequence[JobStatus], name: str, stage_jobs: Sequence[str], wanted: set[str]
) -> list[JobStatus]:
    """The stage's array tasks found by the array's name, each under its job's name (index = position)."""
    found = []
    for status in statuses:
        _, _, task = status.job_id.partition("_")
        if status.name != name or not task.isdigit() or int(task) >= len(stage_jobs):
            continue
        job = stage_jobs[int(task)]
        if job in wanted:
            found.append(replace(status, name=job))
    return found
