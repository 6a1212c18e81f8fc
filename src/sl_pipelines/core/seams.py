"""The seams through which orchestration reaches the outside world.

``ProcessingPipeline`` and the manager talk to a :class:`Backend`: the SSH + Slurm ``Server`` or the
embedded ``LocalBackend``. Everything the manager needs in one polling cycle is one ``probe`` call,
which the Server answers with ONE remote command.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Protocol

from sl_pipelines.core.job import Environment, Job
from sl_pipelines.core.states import JobStatus


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
        job_names: jobs to look up by exact name (finds jobs even when their ids were never seen, which
            is how a restarted manager detects a stage that was already submitted).
        job_ids: jobs to look up by id.
        tracker_paths: tracker files whose text to read (read without the lock: writes are atomic).
    """

    job_names: tuple[str, ...] = ()
    job_ids: tuple[str, ...] = ()
    tracker_paths: tuple[PurePosixPath, ...] = ()


@dataclass(frozen=True)
class ProbeResult:
    """The answer to a :class:`ProbeRequest`.

    Attributes:
        jobs: every job found, by name or id (several per name when a name was submitted twice).
        trackers: each requested tracker path mapped to its text, or None when the file does not exist.
        round_trips: how many remote commands the probe cost (1 for the Server, 0 locally).
    """

    jobs: tuple[JobStatus, ...] = ()
    trackers: Mapping[PurePosixPath, str | None] = field(default_factory=dict)
    round_trips: int = 0


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

    def probe(self, request: ProbeRequest) -> ProbeResult:
        """Answers everything one polling cycle needs, in one round trip."""
        ...

    def submit_jobs(self, jobs: Sequence[Job]) -> tuple[str, ...]:
        """Writes each job's script and submits them all; returns the job ids in order.

        Not idempotent: callers make submission safe by probing for the jobs' names first.
        """
        ...

    def cancel(self, job_ids: Sequence[str]) -> None:
        """Cancels the given jobs (already finished ones are ignored)."""
        ...

    def run_tracker(self, arguments: Sequence[str]) -> CommandResult:
        """Runs ``sl-tracker`` with these arguments where the trackers live; returns its result."""
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
