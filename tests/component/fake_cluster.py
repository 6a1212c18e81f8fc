"""A fake Slurm server with a clock, for fast tests of the polling cycle under faults.

It implements the ``Backend`` seam in memory: jobs move through Slurm's states when the test says so,
trackers follow the real tracker state machine, and every fault the real cluster can show is a switch:
a query part that fails, accounting that lags, finished jobs purged after MinJobAge, a requeue, a
state nobody knows, a refused, deferred or interrupted submission, a busy tracker lock, a job folder
that cannot be written or removed. ``log`` records every side effect in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from sl_pipelines.core.arrays import Submission
from sl_pipelines.core.file_changes import FileChange
from sl_pipelines.core.job import Environment, Job, JobDefaults
from sl_pipelines.core.lease import LEASE_NAME, LeaseOutcome, LeaseRequest
from sl_pipelines.core.retry import PartitionLimits
from sl_pipelines.core.seams import (
    ProbeRequest,
    ProbeResult,
    SubmissionReport,
    TrackerAction,
    TrackerOperation,
    TrackerOutcome,
)
from sl_pipelines.core.session_query import FoundSession
from sl_pipelines.core.states import JobState, JobStatus
from sl_pipelines.core.tracker_state import (
    IDLE_STATE,
    TrackerState,
    record_completion,
    record_failure,
    record_retry,
    start_run,
)
from sl_pipelines.core.tracker_text import dump_tracker_text
from sl_pipelines.errors import SlPipelinesError, TrackerError, TransferError

NOW = "2026-01-01T00:00:00+00:00"


@dataclass
class FakeJob:
    job_id: str
    name: str
    state: JobState = JobState.PENDING
    exit_code: int | None = None
    purged: bool = False  # Slurm forgot it (MinJobAge passed, no accounting)


@dataclass
class FakeCluster:
    """The fake server. Switch faults on by setting its attributes."""

    storage: PurePosixPath = field(default_factory=lambda: PurePosixPath("/fake/storage"))
    working: PurePosixPath = field(default_factory=lambda: PurePosixPath("/fake/working"))
    jobs: dict[str, FakeJob] = field(default_factory=dict)
    trackers: dict[PurePosixPath, TrackerState] = field(default_factory=dict)
    files: dict[PurePosixPath, str] = field(default_factory=dict)
    log: list[tuple[str, ...]] = field(default_factory=list)
    next_id: int = 1000
    # faults
    slurm_down: bool = False  # every Slurm query fails (slurmctld or munge down)
    refuse: dict[str, str] = field(default_factory=dict)  # job name -> sbatch's refusal
    unwritable: set[str] = field(default_factory=set)  # job names whose script cannot be written
    defer_all: str = ""  # sbatch cannot reach the controller: nothing submitted
    drop_after: int | None = None  # the link drops after this many sbatch calls: the rest is unknown
    submit_limit: int | None = None  # the user may have this many jobs queued or running at once
    busy_locks: set[PurePosixPath] = field(default_factory=set)  # trackers whose lock cannot be had
    unremovable: set[PurePosixPath] = field(default_factory=set)
    unreadable: set[PurePosixPath] = field(default_factory=set)
    probes: int = 0
    arrays: int = 0
    leases: dict[PurePosixPath, str] = field(default_factory=dict)  # lease file -> holder id

    # --------------------------------------------------------------------------------- Backend seam
    name = "fake"
    environment = Environment()
    job_exports: tuple[tuple[str, str], ...] = ()
    report_grace_seconds = 0.0
    job_defaults = JobDefaults()

    @property
    def storage_root(self) -> PurePosixPath:
        return self.storage

    @property
    def working_root(self) -> PurePosixPath:
        return self.working

    def probe(self, request: ProbeRequest) -> ProbeResult:
        self.probes += 1
        trackers = {
            p: dump_tracker_text(self.trackers[p]) if p in self.trackers else None
            for p in request.tracker_paths
        }
        lost = {p: self.leases.get(p, "") for p, holder in request.leases if self.leases.get(p) != holder}
        if self.slurm_down:
            unknown = tuple(JobStatus(i, "", JobState.UNKNOWN, reason="down") for i in request.job_ids)
            problem = ("squeue exited 1: Unable to contact slurm controller (connect failure)",)
            return ProbeResult(
                jobs=unknown, trackers=trackers, slurm_problems=problem, round_trips=1, lost_leases=lost
            )
        found = [self._status(j) for j in self.jobs.values() if not j.purged]
        by_id = {s.job_id: s for s in found}
        jobs = [by_id.get(i, JobStatus(i, "", JobState.NOT_FOUND)) for i in request.job_ids]
        jobs += [s for s in found if s.name in request.job_names and s.job_id not in request.job_ids]
        return ProbeResult(jobs=tuple(jobs), trackers=trackers, round_trips=1, lost_leases=lost)

    max_array_size = 1001
    partitions: dict[str | None, PartitionLimits] = field(default_factory=dict)

    def partition_limits(self, partition: str | None) -> PartitionLimits:
        return self.partitions.get(partition, PartitionLimits())

    def submit_jobs(self, items: Sequence[Job | Submission]) -> SubmissionReport:
        """Arrays are taken apart: each task is submitted on its own, under its own name. Under a submit
        limit an array that does not fit as a whole is refused whole, as Slurm does."""
        if self.submit_limit is not None:
            room = self.submit_limit - self._queued()
            too_big = [i for i in items if isinstance(i, Submission) and i.is_array and len(i.jobs) > room]
            if too_big:
                reason = "sbatch said: Job violates accounting/QOS policy (job submit limit)"
                names = [
                    job.name
                    for item in items
                    for job in (item.jobs if isinstance(item, Submission) else (item,))
                ]
                return SubmissionReport(deferred=dict.fromkeys(names, reason), round_trips=1)
        jobs = [job for item in items for job in (item.jobs if isinstance(item, Submission) else (item,))]
        self.arrays += sum(1 for item in items if isinstance(item, Submission) and item.is_array)
        submitted: dict[str, str] = {}
        refused: dict[str, str] = {}
        deferred: dict[str, str] = {}
        unknown: list[str] = []
        for count, job in enumerate(jobs):
            if self.drop_after is not None and count >= self.drop_after:
                if count == self.drop_after:  # that sbatch reached Slurm; its answer never came back
                    self._add(job.name)
                unknown.append(job.name)
            elif job.name in self.unwritable:
                refused[job.name] = f"Could not write job script {job.script_path}: Permission denied"
            elif self.defer_all:
                deferred[job.name] = self.defer_all
            elif self.submit_limit is not None and self._queued() >= self.submit_limit:
                deferred[job.name] = "sbatch said: Job violates accounting/QOS policy (job submit limit)"
            elif job.name in self.refuse:
                refused[job.name] = f"Slurm refused job {job.name}: {self.refuse[job.name]}"
            else:
                submitted[job.name] = self._add(job.name).job_id
        self.log.append(("submit", *(job.name for job in jobs)))
        return SubmissionReport(submitted, refused, deferred, tuple(unknown), round_trips=1)

    def cancel(self, job_ids: Sequence[str]) -> None:
        self.log.append(("cancel", *job_ids))
        for job in self.jobs.values():
            if job.job_id in job_ids and (job.state.is_active or job.state.may_requeue):
                job.state = JobState.CANCELLED

    def update_trackers(self, operations: Sequence[TrackerOperation]) -> tuple[TrackerOutcome, ...]:
        return tuple(self._tracker_op(op) for op in operations)

    def read_text(self, path: PurePosixPath, *, tail_bytes: int | None = None) -> str | None:
        if path in self.unreadable:
            raise TransferError(f"Cannot read {path} (test)", path=path)
        return self.files.get(path)

    def list_dir(self, path: PurePosixPath) -> tuple[str, ...]:
        return ()

    def read_files(self, folder: PurePosixPath, name: str) -> dict[PurePosixPath, str]:
        return {p: t for p, t in self.files.items() if p.name == name and p.parent.parent == folder}

    def change_files(self, changes: Sequence[FileChange]) -> tuple[str, ...]:
        results = []
        for change in changes:
            if change.text is not None:
                self.files[change.path] = change.text
                results.append("")
            elif change.path.name == LEASE_NAME:
                self.leases.pop(change.path, None)
                results.append("")
            elif change.path in self.unremovable:
                results.append(f"Could not remove {change.path} (test)")
            else:
                self.log.append(("remove", str(change.path), *change.keep))
                results.append("")
        return tuple(results)

    def take_leases(self, requests: Sequence[LeaseRequest]) -> tuple[LeaseOutcome, ...]:
        outcomes = []
        for request in requests:
            path = request.folder / LEASE_NAME
            current = self.leases.get(path)
            if current not in (None, request.holder.holder_id) and not request.force:
                outcomes.append(
                    LeaseOutcome(False, {"holder": current, "pid": "1", "user": "x", "host": "elsewhere"})
                )
                continue
            self.leases[path] = request.holder.holder_id
            outcomes.append(LeaseOutcome(True, took_over=current not in (None, request.holder.holder_id)))
        return tuple(outcomes)

    def find_sessions(self, specs: Sequence[str]) -> tuple[FoundSession, ...]:
        raise NotImplementedError("tests give the fake cluster SessionPaths")

    def remove(self, path: PurePosixPath) -> None:
        if path in self.unremovable:
            raise TransferError(f"Cannot remove {path} (test)", path=path)
        self.log.append(("remove", str(path)))

    # --------------------------------------------------------------------------------- the test's hands
    def job(self, name: str) -> FakeJob:
        matches = [j for j in self.jobs.values() if j.name == name]
        assert matches, f"job {name} was never submitted"
        return matches[-1]

    def submissions(self, name: str) -> int:
        return sum(1 for j in self.jobs.values() if j.name == name)

    def run(self, *names: str) -> None:
        for name in names:
            self.job(name).state = JobState.RUNNING

    def finish(self, name: str, tracker: PurePosixPath, *, report: bool = True) -> None:
        """The job reports its completion into the tracker (unless not), then exits 0."""
        if report:
            state = self.trackers[tracker]
            assert state.manager_id is not None
            self.trackers[tracker] = record_completion(state, state.manager_id, name, now=NOW, path=tracker)
        job = self.job(name)
        job.state, job.exit_code = JobState.COMPLETED, 0

    def fail(self, name: str, state: JobState = JobState.FAILED, exit_code: int = 1) -> None:
        job = self.job(name)
        job.state, job.exit_code = state, exit_code

    def _queued(self) -> int:
        return sum(1 for job in self.jobs.values() if job.state.is_active)

    def _status(self, job: FakeJob) -> JobStatus:
        return JobStatus(job.job_id, job.name, job.state, job.exit_code)

    def _add(self, name: str) -> FakeJob:
        job = FakeJob(str(self.next_id), name)
        self.next_id += 1
        self.jobs[job.job_id] = job
        return job

    def _tracker_op(self, op: TrackerOperation) -> TrackerOutcome:
        self.log.append((op.action.value, str(op.path), op.job))
        if op.path in self.busy_locks:
            return TrackerOutcome(False, f"Could not lock tracker {op.path} (test)", transient=True)
        state = self.trackers.get(op.path, IDLE_STATE)
        try:
            if op.action is TrackerAction.CLAIM:
                state = start_run(state, op.manager_id, op.job_count, now=NOW, path=op.path)
            elif op.action is TrackerAction.ERROR:
                state = record_failure(state, op.manager_id, op.job, op.reason, now=NOW, path=op.path)
            elif op.action is TrackerAction.RETRY:
                state = record_retry(state, op.manager_id, op.job, op.attempt, now=NOW, path=op.path)
            else:
                state = IDLE_STATE
        except (TrackerError, SlPipelinesError) as exc:
            return TrackerOutcome(False, str(exc))
        self.trackers[op.path] = state
        return TrackerOutcome(True)


class Clock:
    """A clock a test moves by hand (``clock.now += 60``)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now
