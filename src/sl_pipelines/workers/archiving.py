"""Data archiving: move a session's processed data from the working volume to the storage volume.

The order protects the data: hash the working copy, copy it into a temporary folder on the storage
volume, hash the copy, rename it into place, hash the working copy again (nothing changed it meanwhile)
and only then delete the working copy. Nothing is deleted that was not verified, and an archived copy
that differs from the working copy is never overwritten.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from sl_pipelines.adapters.locks import LockKind
from sl_pipelines.core.layout import SessionPaths
from sl_pipelines.errors import SessionNotFoundError, VerificationError, WorkerError
from sl_pipelines.vocabulary import TrackerFileNames
from sl_pipelines.workers.checksum import calculate_checksum
from sl_pipelines.workers.files import copy_tree, os_errors, partial_sibling, remove_stale_partials, tree_size
from sl_pipelines.workers.preparation import TransferResult, refuse_while_running

_LOG = logging.getLogger("sl_pipelines")


def archive_session(paths: SessionPaths, *, lock_kind: LockKind | str | None = None) -> TransferResult:
    """Moves the session's processed data to the storage volume, verified, then deletes the working copy.

    ``lock_kind`` is the lock of the session's trackers (None: ``$SL_TRACKER_LOCK``, else ``file``).

    Raises:
        SessionNotFoundError: the session does not exist on the storage volume.
        WorkerError: there is no processed data, the two volumes are one folder, processing
            preparation runs on the session, or the copy failed.
        VerificationError: an archived copy that differs already exists (it is left as it is, and so is
            the working copy), or the copy or the working data did not verify (the working copy is kept).
    """
    source = Path(paths.processed_data)
    destination = Path(paths.archived_processed_data)
    if source == destination:
        raise WorkerError(
            f"Cannot archive {source} onto itself: the working root and the storage root are the same "
            "folder; give a separate --working-root."
        )
    if not Path(paths.storage_session).is_dir():
        raise SessionNotFoundError(
            f"Session {paths.session!r} does not exist at {paths.storage_session}; check the project, "
            "animal and session names and the storage root.",
            session=paths.session,
        )
    refuse_while_running(paths, TrackerFileNames.PREPARATION, "archive", lock_kind)
    if not source.is_dir():
        return _nothing_to_move(paths, source, destination)
    checksum = calculate_checksum(source, exclude=())
    if destination.exists():
        _check_existing(destination, checksum, source)
        copied = False
    else:
        with os_errors("copy processed data to", destination):
            _copy_verified(source, destination, checksum)
        copied = True
    files, size = tree_size(destination)
    _delete_verified(source, checksum)
    return TransferResult(source, destination, checksum, files, size, copied)


def _nothing_to_move(paths: SessionPaths, source: Path, destination: Path) -> TransferResult:
    """An earlier run moved the data already (success), or there never was any (error)."""
    if destination.is_dir():
        _LOG.info("No working copy at %s; %s holds the archived data already.", source, destination)
        files, size = tree_size(destination)
        checksum = calculate_checksum(destination, exclude=())
        return TransferResult(source, destination, checksum, files, size, copied=False)
    raise WorkerError(
        f"Session {paths.session!r} has no processed data at {source} to archive; run its processing "
        "pipelines first."
    )


def _check_existing(destination: Path, checksum: str, source: Path) -> None:
    """Accepts an archived copy identical to the working copy; refuses one that differs."""
    archived = calculate_checksum(destination, exclude=())
    if archived != checksum:
        raise VerificationError(
            f"Archived data already exists at {destination} and differs from the working copy {source} "
            f"(archived {archived}, working {checksum}); nothing was changed: move the old archive aside "
            "or delete it, then archive again.",
            path=destination,
        )
    _LOG.info("Archived copy %s already matches the working copy (%s).", destination, checksum)


def _copy_verified(source: Path, destination: Path, checksum: str) -> None:
    """Copies into a temporary sibling on the storage volume, verifies it, then renames it into place."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(destination)
    partial = partial_sibling(destination)
    try:
        copy_tree(source, partial)
        copied = calculate_checksum(partial, exclude=())
        if copied != checksum:
            raise VerificationError(
                f"The archive copy of {source} does not match it (working {checksum}, copy {copied}); the "
                "copy was deleted and the working copy kept: check the storage volume and archive again.",
                path=destination,
            )
        partial.rename(destination)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    _LOG.info("Copied %s to %s and verified checksum %s.", source, destination, checksum)


def _delete_verified(source: Path, checksum: str) -> None:
    """Deletes the working copy after checking that it still is what was archived."""
    now = calculate_checksum(source, exclude=())
    if now != checksum:
        raise VerificationError(
            f"Processed data {source} changed while it was archived (before {checksum}, now {now}); the "
            "working copy was kept: stop whatever writes into it, move the archive aside and archive again.",
            path=source,
        )
    with os_errors("delete the archived working copy", source):
        shutil.rmtree(source)
    _LOG.info("Deleted working copy %s after verifying the archive.", source)
