"""Session locks: a session belongs to one workflow run for the run's whole duration.

The lock is a lease file in the session's tracking folder, ``tracking_data/workflow/lease``, written
atomically under ``flock`` (the run leases' own mechanism, :mod:`sl_pipelines.core.lease`): its first line
is the workflow run's token, then the user, host, pid, the age after which it counts as abandoned, the
workflow run and when it started. Every polling cycle renews it (in the cycle's one probe). Another
workflow is refused on a locked session, naming the owner, unless the owner is gone (a process of this
computer that has ended, or not seen for its stated age). All locks of a run are taken in one call and
released in one call at its end; ``sl-tracker unlock`` (or ``abort``) releases one by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from sl_pipelines.core.file_changes import FileChange
from sl_pipelines.core.layout import SessionPaths
from sl_pipelines.core.lease import LEASE_NAME, Holder, LeaseOutcome, LeaseRequest
from sl_pipelines.core.seams import Backend
from sl_pipelines.orchestration.cycle import holder_gone

LOCK_FOLDER = "workflow"


def lock_folder(paths: SessionPaths) -> PurePosixPath:
    """The folder of a session's workflow lock (in its tracking folder)."""
    return paths.tracking_data / LOCK_FOLDER


def lock_path(paths: SessionPaths) -> PurePosixPath:
    """A session's workflow lock file."""
    return lock_folder(paths) / LEASE_NAME


@dataclass(frozen=True)
class Refusal:
    """A session another live workflow run holds: its name and who holds it, in one phrase."""

    session: str
    owner: str


def describe_owner(outcome: LeaseOutcome) -> str:
    """``workflow run lab-daily-1a2b (pid 12 of ana on lab-pc-3, started ..., last seen 4 s ago)``."""
    info = outcome.holder or {}
    run = info.get("workflow", "?")
    who = f"pid {info.get('pid', '?')} of {info.get('user', '?')} on {info.get('host', '?')}"
    since = f"started {info.get('started', '?')}, last seen {outcome.age:.0f} s ago"
    return f"workflow run {run} ({who}, {since})"


def take_locks(
    backend: Backend, sessions: Sequence[tuple[str, SessionPaths]], holder: Holder
) -> tuple[list[str], list[Refusal]]:
    """Locks the sessions to ``holder`` (ONE call; a second only for locks of ended local processes).

    Returns:
        The sessions locked now, and those another live workflow run holds (with its owner). A lock that
        could not be had for another reason (an unwritable folder) is a refusal too.
    """
    if not sessions:
        return [], []
    requests = [LeaseRequest(lock_folder(paths), holder) for _, paths in sessions]
    outcomes = list(backend.take_leases(requests))
    gone = [i for i, outcome in enumerate(outcomes) if not outcome.taken and holder_gone(outcome)]
    if gone:  # a workflow of this computer that no longer runs: its locks are void
        again = backend.take_leases([LeaseRequest(requests[i].folder, holder, force=True) for i in gone])
        for index, outcome in zip(gone, again, strict=True):
            outcomes[index] = outcome
    taken: list[str] = []
    refused: list[Refusal] = []
    for (name, _), outcome in zip(sessions, outcomes, strict=True):
        if outcome.taken:
            taken.append(name)
        elif outcome.holder is not None:
            refused.append(Refusal(name, describe_owner(outcome)))
        else:
            refused.append(Refusal(name, "its lock file could not be written (see the tracking folder)"))
    return taken, refused


def release_locks(backend: Backend, sessions: Sequence[SessionPaths]) -> tuple[str, ...]:
    """Removes the sessions' lock folders (ONE call); per session "" or why it failed."""
    if not sessions:
        return ()
    return backend.change_files([FileChange(lock_folder(paths)) for paths in sessions])
