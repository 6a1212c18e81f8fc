"""The seams through which orchestration reaches the outside world.

``ProcessingPipeline`` and the manager talk to a :class:`Backend`: the SSH + Slurm ``Server`` or the
embedded ``LocalBackend``. The seam offers typed operations, never a command line: everything one polling
cycle needs to know is one ``probe`` call, a cycle's submissions are one ``submit_jobs`` call, and tracker
claims, failure records and aborts are one ``update_trackers`` call. The Server answers each with ONE
framed remote command whose variable-size request travels on standard input; the local backend answers
in-process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Protocol

from sl_pipelines.core.arrays import Submission
from sl_pipelines.core.file_changes import FileChange
from sl_pipelines.core.job import Environment, Job, JobDefaults
from sl_pipelines.core.lease import LeaseOutcome, LeaseRequest
from sl_pipelines.core.retry import PartitionLimits
from sl_pipelines.core.selection import SessionTrackers
from sl_pipelines.core.session_query import FoundSession
from sl_pipelines.core.states import JobStatus
from sl_pipelines.core.usage import Measured


@dataclass(frozen=True)
class CommandResult:
    """What a command returned: its exit code and both output streams."""

    command: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        """True when the command exited 0."""
        return self.exit_code == 0


@dataclass(frozen=True)
class ProbeRequest:
    """What one polling cycle wants to know.

    Attributes:
        job_names: jobs to look up by exact name among the user's own jobs; only jobs whose id was never
            seen (a submission whose outcome is unknown, or a restarted manager adopting a stage).
        job_ids: jobs to look up by id: the cheap query, filtered by Slurm whatever else the cluster holds.
        tracker_paths: tracker files whose text to read (without the lock: writes are atomic). They are read
            after the job states, so a job Slurm reports finished has its tracker report visible.
        leases: (lease file, holder id) of the runs this manager drives: each is renewed (touched) if it
            still names the holder, else reported lost.
        usage: (job id, the job's own usage file) of jobs that ended and whose use of resources is
            wanted: asked once per ended job (from ``sacct`` where the cluster has accounting, else
            ``scontrol``, and the file), never for running jobs.
    """

    job_names: tuple[str, ...] = ()
    job_ids: tuple[str, ...] = ()
    tracker_paths: tuple[PurePosixPath, ...] = ()
    leases: tuple[tuple[PurePosixPath, str], ...] = ()
    usage: tuple[tuple[str, PurePosixPath], ...] = ()


@dataclass(frozen=True)
class ProbeResult:
    """The answer to a :class:`ProbeRequest`.

    Attributes:
        jobs: every job found, by name or id (several per name when a name was submitted twice). A
            requested id no query knows is NOT_FOUND when every query answered, UNKNOWN otherwise.
        trackers: each readable tracker path mapped to its text, or None when the file does not exist.
        unreadable: trackers that exist but could not be read, mapped to why.
        slurm_problems: why a Slurm query did not answer; when not empty, a job's absence from ``jobs``
            means nothing ("no answer" is never "no job").
        round_trips: how many remote commands the probe cost (1 for the Server, 0 locally).
        lost_leases: leases that name another holder now (the run was taken over), mapped to its id.
        usage: what each asked-for job used, by job id; a job missing here had nothing to say yet.
    """

    jobs: tuple[JobStatus, ...] = ()
    trackers: Mapping[PurePosixPath, str | None] = field(default_factory=dict)
    unreadable: Mapping[PurePosixPath, str] = field(default_factory=dict)
    slurm_problems: tuple[str, ...] = ()
    round_trips: int = 0
    lost_leases: Mapping[PurePosixPath, str] = field(default_factory=dict)
    usage: Mapping[str, Measured] = field(default_factory=dict)

    @property
    def slurm_answered(self) -> bool:
        """True when every Slurm query answered: only then does a missing job mean "no such job"."""
        return not self.slurm_problems


@dataclass(frozen=True)
class SubmissionReport:
    """What became of each job of one ``submit_jobs`` call, by job name.

    Attributes:
        submitted: jobs Slurm accepted, with their ids.
        refused: jobs that cannot be submitted as they are (Slurm refused them, or their script could not
            be written), with the reason: it fails the job's pipeline.
        deferred: jobs certainly not submitted, for a passing reason (the controller did not answer, a
            submit limit was reached): a later cycle submits them.
        unknown: jobs whose outcome is not known (the connection dropped during sbatch): a later cycle
            looks them up by name before anything is submitted again.
        round_trips: remote commands the submission cost.
    """

    submitted: Mapping[str, str] = field(default_factory=dict)
    refused: Mapping[str, str] = field(default_factory=dict)
    deferred: Mapping[str, str] = field(default_factory=dict)
    unknown: tuple[str, ...] = ()
    round_trips: int = 0


@dataclass(frozen=True)
class RunSnapshot:
    """One run as the server shows it now (read-only): what ``status`` and ``attach`` display.

    Attributes:
        record: the run's record (its JSON text).
        lease: the lease file's text ("" when nobody holds the run), and ``lease_age`` its age in seconds.
        tracker: the tracker's text (None when missing).
        jobs: Slurm's view of the run's jobs (by id).
        slurm_problems: why Slurm did not answer, if it did not.
    """

    record: str
    lease: str = ""
    lease_age: float | None = None
    tracker: str | None = None
    jobs: tuple[JobStatus, ...] = ()
    slurm_problems: tuple[str, ...] = ()


class TrackerAction(StrEnum):
    """What a manager (or an operator) does to a tracker where it lives."""

    CLAIM = "claim"  # start (or join) the run of this manager id before anything is submitted
    ERROR = "error"  # record the run's failure; the first failure recorded stays
    ABORT = "abort"  # reset the tracker to idle, whoever owns it
    RETRY = "retry"  # the owning manager retries one job: its failure (if any) moves into the history


@dataclass(frozen=True)
class TrackerOperation:
    """One change to one tracker.

    Attributes:
        action: claim, record a failure, or abort.
        path: the tracker file.
        manager_id: the run's manager id (claim, error).
        job_count: jobs in the run (claim).
        job: the job the failure is pinned on (error), or the job retried (retry).
        reason: the failure's reason (error).
        attempt: the number of the attempt that now runs (retry).
    """

    action: TrackerAction
    path: PurePosixPath
    manager_id: int = 0
    job_count: int = 1
    job: str = ""
    reason: str = ""
    attempt: int = 0


@dataclass(frozen=True)
class TrackerOutcome:
    """The result of one :class:`TrackerOperation`.

    Attributes:
        ok: the change was made (or this manager had already made it).
        error: why not, in one sentence naming the file (and the owner when another manager holds it).
        transient: the lock could not be had in time; the same operation may succeed later.
    """

    ok: bool
    error: str = ""
    transient: bool = False


class Backend(Protocol):
    """Where pipelines run: a Slurm server over SSH, or the local machine."""

    @property
    def name(self) -> str:
        """A short label for messages (the profile name, or ``local``)."""
        ...

    @property
    def storage_root(self) -> PurePosixPath:
        """The slow, large volume: raw data and trackers."""
        ...

    @property
    def working_root(self) -> PurePosixPath:
        """The fast volume: processing output and job folders."""
        ...

    @property
    def environment(self) -> Environment:
        """The server-side environment job scripts activate (where ``sl-worker`` is installed)."""
        ...

    @property
    def job_exports(self) -> tuple[tuple[str, str], ...]:
        """Environment variables every job script sets (such as the tracker lock kind)."""
        ...

    @property
    def report_grace_seconds(self) -> float:
        """How long a job's tracker write may take to become visible to the manager (NFS caches)."""
        ...

    @property
    def job_defaults(self) -> JobDefaults:
        """Partition, account, qos and gres for jobs whose definition leaves them unset."""
        ...

    def probe(self, request: ProbeRequest) -> ProbeResult:
        """Answers everything one polling cycle needs, in one round trip."""
        ...

    @property
    def max_array_size(self) -> int:
        """Array task indexes must stay below this (the cluster's ``MaxArraySize``)."""
        ...

    def partition_limits(self, partition: str | None) -> PartitionLimits:
        """The most memory and time a job may ask of ``partition`` (None: the cluster's default)."""
        ...

    def submit_jobs(self, jobs: Sequence[Job | Submission]) -> SubmissionReport:
        """Writes each job's script and submits the jobs (arrays as one sbatch); says per job what became
        of it (an array task's id is ``<array id>_<index>``).

        Not idempotent: callers look up the names of jobs whose outcome is unknown before submitting
        them again.

        Raises:
            ServerError: the server could not be reached before anything was submitted.
        """
        ...

    def cancel(self, job_ids: Sequence[str]) -> None:
        """Cancels the given jobs (already finished ones are ignored)."""
        ...

    def update_trackers(self, operations: Sequence[TrackerOperation]) -> tuple[TrackerOutcome, ...]:
        """Applies tracker operations where the trackers live: one outcome per operation, in order."""
        ...

    def take_leases(self, requests: Sequence[LeaseRequest]) -> tuple[LeaseOutcome, ...]:
        """Takes (or keeps) the leases of runs, under a lock, in one call: who drives each run."""
        ...

    def select_sessions(self, pattern: str) -> tuple[SessionTrackers, ...]:
        """The sessions a ``project/animal/session`` pattern names, each with its trackers and session
        data, in one call.

        Raises:
            ConfigurationError: the pattern is not three parts, or a part could leave the storage root.
        """
        ...

    def list_runs(self) -> tuple[RunSnapshot, ...]:
        """Every run recorded on the server, with its lease, tracker and jobs: one call (read-only)."""
        ...

    def find_sessions(self, specs: Sequence[str]) -> tuple[FoundSession, ...]:
        """Finds sessions (ids, ``project/animal/session`` or paths) with their session data, in one call.

        Raises:
            SessionNotFoundError, ConfigurationError: the first spec that names no single session.
        """
        ...

    def read_files(self, folder: PurePosixPath, name: str) -> Mapping[PurePosixPath, str]:
        """The text of every ``<folder>/*/<name>`` (the runs' records), in one call."""
        ...

    def change_files(self, changes: Sequence[FileChange]) -> tuple[str, ...]:
        """Writes files atomically and removes paths, in one call; per change "" or why it failed."""
        ...

    def read_text(self, path: PurePosixPath, *, tail_bytes: int | None = None) -> str | None:
        """Returns a file's text (or its last ``tail_bytes``), or None when it does not exist."""
        ...

    def list_dir(self, path: PurePosixPath) -> tuple[str, ...]:
        """Names in a folder (empty when the folder does not exist)."""
        ...

    def remove(self, path: PurePosixPath) -> None:
        """Removes a file or a whole tree; a missing path is not an error."""
        ...
