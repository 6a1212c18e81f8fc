"""Data archiving: move a session's processed data from the working volume to the storage volume.

The order protects the data, and every state a kill can leave is recognisable by a re-run:

1. The working copy (``<working_session>/processed_data``) is copied into a temporary folder on the
   storage volume and hashed as it is read; the copy is fsynced and read back from the volume to be
   verified file by file (path and XXH3-128).
2. The record of the verified files (``<storage_session>/processed_data.xxh128``) is written durably
   and the copy is renamed into place as the archive (``<storage_session>/processed_data``).
3. The working copy is moved aside with one rename on its own volume (``.archived-processed_data-…``),
   so nothing reaches it by its path any more, and deleted file by file: a file goes only when its path
   and hash are in the verified set. Whatever appeared or changed after the verification stays, and
   the run fails naming it.

A re-run that finds an archive checks it against its record and finishes the delete only when every
working file it finds is in the archive, identical. A working copy with new or changed files is never
deleted, and the message says which copy is complete; it never advises deleting an archive.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from sl_pipelines.adapters.locks import LockKind
from sl_pipelines.core.layout import SessionPaths
from sl_pipelines.errors import SessionNotFoundError, VerificationError, WorkerError
from sl_pipelines.vocabulary import ProcessingPipelines
from sl_pipelines.workers.archive_record import read_record, record_path, write_record
from sl_pipelines.workers.archive_report import check_working_within, damaged_archive, report_leftovers
from sl_pipelines.workers.files import (
    ASIDE_PREFIX,
    fsync_folder,
    os_errors,
    partial_sibling,
    remove_stale_partials,
    remove_tree,
    siblings,
)
from sl_pipelines.workers.preparation import TransferResult
from sl_pipelines.workers.session_guard import refuse_while_writers_run
from sl_pipelines.workers.tree_copy import copy_verified
from sl_pipelines.workers.tree_delete import delete_verified
from sl_pipelines.workers.tree_digest import TreeDigest, hash_tree

_LOG = logging.getLogger("sl_pipelines")


def archive_session(paths: SessionPaths, *, lock_kind: LockKind | str | None = None) -> TransferResult:
    """Moves the session's processed data to the storage volume, verified, then deletes the working copy.

    ``lock_kind`` is the lock of the session's trackers (None: ``$SL_TRACKER_LOCK``, else ``file``).

    Raises:
        SessionNotFoundError: the session does not exist on the storage volume.
        WorkerError: there is no processed data, the two volumes are one folder, a pipeline that writes
            the session's working data runs, or files could not be copied or deleted (one sentence:
            the OS error, how many files, the first one).
        VerificationError: an archive that differs from the working copy exists (both are kept, and
            the message says which one is complete), the copy did not verify, or files appeared or
            changed in the working copy after the verification (they are kept and named).
    """
    source = Path(paths.processed_data)
    destination = Path(paths.archived_processed_data)
    _check_session(paths, source, destination)
    refuse_while_writers_run(paths, ProcessingPipelines.ARCHIVING, "archive", lock_kind)
    if destination.is_dir():
        reference = _existing_archive(source, destination)
        copied = False
    else:
        _restore_aside(source, destination)
        reference = _new_archive(paths, source, destination)
        copied = True
    _delete_working_copy(source, destination, reference)
    files = len(reference.files)
    return TransferResult(source, destination, reference.checksum, files, reference.size_bytes, copied)


def _check_session(paths: SessionPaths, source: Path, destination: Path) -> None:
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


def _existing_archive(source: Path, destination: Path) -> TreeDigest:
    """Verifies an archive found in place (against its record) and that it holds the working files.

    A temporary copy beside it is the remains of a copy killed before the archive was made from the
    working copy: it is removed.
    """
    with os_errors("verify the archive", destination):
        archived = hash_tree(destination)
        recorded = read_record(destination)
        remove_stale_partials(destination)
    if recorded is not None and recorded != archived.files:
        raise damaged_archive(source, destination, recorded, archived)
    if recorded is None:
        _LOG.info(
            "Archive %s has no record (older, or made by hand); checking against its content.", destination
        )
    check_working_within(source, destination, archived)
    return archived


def _restore_aside(source: Path, destination: Path) -> None:
    """Moves a working copy set aside by an interrupted archive back, when its archive is gone."""
    with os_errors("look for an interrupted archive of", source):
        asides = siblings(source, ASIDE_PREFIX)
    if not asides:
        return
    if source.exists() or len(asides) > 1:
        raise VerificationError(
            f"There is no archive at {destination}, yet an interrupted archive set working files aside "
            f"at {asides[0]} and {source if source.exists() else asides[1]} exists too; nothing was "
            "changed: merge them into one processed_data folder by hand, then archive again.",
            path=asides[0],
        )
    _LOG.warning(
        "No archive at %s: moving %s back to %s before archiving it.", destination, asides[0], source
    )
    with os_errors("move back the working copy", asides[0]):
        asides[0].rename(source)
        fsync_folder(source.parent)


def _new_archive(paths: SessionPaths, source: Path, destination: Path) -> TreeDigest:
    """Copies, syncs and verifies the working copy, records it, and renames the copy into place."""
    if not source.is_dir():
        raise WorkerError(
            f"Session {paths.session!r} has no processed data at {source} to archive; run its processing "
            "pipelines first."
        )
    record = record_path(destination)
    with os_errors("clear an interrupted copy beside", destination):
        remove_stale_partials(destination)
        if record.exists():  # unlinking a missing file fails too on a read-only volume
            record.unlink()
    partial = partial_sibling(destination)
    advice = (
        "nothing was deleted and the partial copy was removed: make room or fix permissions on the "
        "storage volume, then archive again"
    )
    try:
        with os_errors("copy processed data to", destination):
            digest = copy_verified(source, partial, advice=advice)
            write_record(destination, digest.files)
            partial.rename(destination)
            fsync_folder(destination.parent)
    except BaseException:
        remove_tree(partial)
        if not destination.exists():
            with contextlib.suppress(OSError):
                record.unlink()
        raise
    _LOG.info("Archived %s to %s, verified (checksum %s).", source, destination, digest.checksum)
    return digest


def _delete_working_copy(source: Path, destination: Path, reference: TreeDigest) -> None:
    """Moves the working copy aside and deletes the verified files of every copy set aside."""
    if source.is_dir():
        aside = partial_sibling(source, ASIDE_PREFIX)
        try:
            source.rename(aside)
            fsync_folder(source.parent)
        except OSError as exc:
            raise WorkerError(
                f"{exc.strerror or exc}: cannot move the working copy {source} aside to delete it; the "
                f"archive {destination} is complete and verified and the working copy was kept whole: make "
                "the working volume writable, then archive again to finish."
            ) from exc
    with os_errors("delete the verified working copy", source):
        outcomes = [
            (aside, delete_verified(aside, reference.files)) for aside in siblings(source, ASIDE_PREFIX)
        ]
    report_leftovers(source, destination, outcomes, len(reference.files))
    if outcomes:
        _LOG.info("Deleted the working copy %s after verifying the archive %s.", source, destination)
