"""Processing preparation: copy a session's raw data to the working volume, verified.

The copy goes into a temporary folder beside the destination, is hashed with the checksum of
:mod:`sl_pipelines.workers.checksum` and compared with the stored checksum, and only then renamed to
``<working_session>/raw_data``. A copy that does not verify is deleted, so the working volume never
holds a partial or wrong ``raw_data`` folder.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from sl_pipelines.adapters.locks import LockKind
from sl_pipelines.adapters.tracker_store import ProcessingTracker
from sl_pipelines.core.layout import RAW_DATA, SessionPaths
from sl_pipelines.errors import SessionNotFoundError, VerificationError, WorkerError
from sl_pipelines.vocabulary import TrackerFileNames
from sl_pipelines.workers.checksum import CHECKSUM_FILE, calculate_checksum, read_stored_checksum
from sl_pipelines.workers.files import copy_tree, os_errors, partial_sibling, remove_stale_partials, tree_size

_LOG = logging.getLogger("sl_pipelines")


@dataclass(frozen=True)
class TransferResult:
    """The outcome of a verified copy or move.

    Attributes:
        source: the folder that was copied.
        destination: where the verified copy now is.
        checksum: the checksum both folders share.
        files: how many files the copy holds.
        size_bytes: their total size.
        copied: False when a verified copy was already in place and nothing was copied.
    """

    source: Path
    destination: Path
    checksum: str
    files: int
    size_bytes: int
    copied: bool


def refuse_while_running(
    paths: SessionPaths, tracker_file: TrackerFileNames, action: str, lock_kind: LockKind | str | None = None
) -> None:
    """Raises :class:`WorkerError` when the session's ``tracker_file`` shows a running pipeline.

    Raises:
        WorkerError: the other pipeline is running.
        TrackerError: its tracker is corrupt or its lock could not be had.
    """
    tracker = ProcessingTracker(Path(paths.tracker(tracker_file)), lock_kind=lock_kind)
    state = tracker.read()
    if state.is_running:
        raise WorkerError(
            f"Cannot {action} session {paths.session!r} while another pipeline runs on it (tracker "
            f"{tracker.path}, manager {state.manager_id}); wait for it to finish or abort it with "
            f"'sl-tracker abort'."
        )


def prepare_session(paths: SessionPaths, *, lock_kind: LockKind | str | None = None) -> TransferResult:
    """Copies the session's raw data from the storage volume to the working volume and verifies it.

    ``lock_kind`` is the lock of the session's trackers (None: ``$SL_TRACKER_LOCK``, else ``file``).

    An existing working copy that matches the stored checksum is kept as it is; one that does not is
    replaced by a fresh verified copy (the storage volume holds the original).

    Raises:
        SessionNotFoundError: the session has no raw data on the storage volume.
        VerificationError: no checksum is stored, or the copy does not match it; no copy is left.
        WorkerError: data archiving runs on the session, or the copy failed (full volume, permissions).
    """
    source = Path(paths.raw_data)
    destination = Path(paths.working_session) / RAW_DATA
    if not source.is_dir():
        raise SessionNotFoundError(
            f"Session {paths.session!r} has no raw data at {source}; check the project, animal and "
            "session names and the storage root.",
            session=paths.session,
        )
    refuse_while_running(paths, TrackerFileNames.ARCHIVING, "prepare", lock_kind)
    stored = read_stored_checksum(source)
    if stored is None:
        raise VerificationError(
            f"Raw data {source} has no stored checksum ({CHECKSUM_FILE}), so a copy cannot be verified; "
            "run checksum resolution first (sl-worker checksum --create-missing).",
            path=source,
        )
    if destination.is_dir() and calculate_checksum(destination) == stored:
        _LOG.info("Working copy %s already matches checksum %s; nothing to copy.", destination, stored)
        return _result(source, destination, stored, copied=False)
    with os_errors("copy raw data to", destination):
        _copy_verified(source, destination, stored)
    return _result(source, destination, stored, copied=True)


def _copy_verified(source: Path, destination: Path, stored: str) -> None:
    """Copies into a temporary sibling, verifies it against ``stored``, then renames it into place."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(destination)
    partial = partial_sibling(destination)
    try:
        copy_tree(source, partial)
        copied = calculate_checksum(partial)
        if copied != stored:
            raise VerificationError(
                f"The copy of {source} does not match the stored checksum (stored {stored}, copy "
                f"{copied}); the copy was deleted: run checksum resolution to check the raw data.",
                path=source,
            )
        _replace_folder(partial, destination)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    _LOG.info("Copied %s to %s and verified checksum %s.", source, destination, stored)


def _replace_folder(new: Path, destination: Path) -> None:
    """Renames ``new`` to ``destination``, moving an existing (unverified) folder aside first."""
    if not destination.exists():
        new.rename(destination)
        return
    old = partial_sibling(destination)
    destination.rename(old)
    new.rename(destination)
    shutil.rmtree(old, ignore_errors=True)


def _result(source: Path, destination: Path, checksum: str, *, copied: bool) -> TransferResult:
    files, size = tree_size(destination)
    return TransferResult(source, destination, checksum, files, size, copied)
