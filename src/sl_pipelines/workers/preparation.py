"""Processing preparation: copy a session's raw data to the working volume, verified.

The copy goes into a temporary folder beside the destination; the raw data is hashed as it is read and
compared with the stored checksum, the copy is fsynced and read back from the volume to be verified
file by file, and only then is it renamed to ``<working_session>/raw_data``. A copy that does not
verify is deleted, so the working volume never holds a partial or wrong ``raw_data`` folder. Temporary
folders a killed run left behind (``.partial-raw_data-…``) are removed by the next run, first thing:
the storage volume always holds the original.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from sl_pipelines.adapters.locks import LockKind
from sl_pipelines.core.layout import RAW_DATA, SessionPaths
from sl_pipelines.errors import SessionNotFoundError, VerificationError
from sl_pipelines.vocabulary import ProcessingPipelines
from sl_pipelines.workers.checksum import CHECKSUM_FILE, read_stored_checksum
from sl_pipelines.workers.files import (
    fsync_folder,
    os_errors,
    partial_sibling,
    remove_stale_partials,
    remove_tree,
)
from sl_pipelines.workers.session_guard import refuse_while_writers_run
from sl_pipelines.workers.tree_copy import copy_verified
from sl_pipelines.workers.tree_digest import TreeDigest, hash_tree

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


def prepare_session(paths: SessionPaths, *, lock_kind: LockKind | str | None = None) -> TransferResult:
    """Copies the session's raw data from the storage volume to the working volume and verifies it.

    ``lock_kind`` is the lock of the session's trackers (None: ``$SL_TRACKER_LOCK``, else ``file``).

    An existing working copy that matches the stored checksum is kept as it is; one that does not is
    replaced by a fresh verified copy (the storage volume holds the original).

    Raises:
        SessionNotFoundError: the session has no raw data on the storage volume.
        VerificationError: no checksum is stored, or the copy does not match it; no copy is left.
        WorkerError: another pipeline that writes the session's working data runs (archiving, the
            processing pipelines), or files could not be copied (one sentence: the OS error, how many
            files, the first one).
    """
    source = Path(paths.raw_data)
    destination = Path(paths.working_session) / RAW_DATA
    if not source.is_dir():
        raise SessionNotFoundError(
            f"Session {paths.session!r} has no raw data at {source}; check the project, animal and "
            "session names and the storage root.",
            session=paths.session,
        )
    refuse_while_writers_run(paths, ProcessingPipelines.PREPARATION, "prepare", lock_kind)
    stored = read_stored_checksum(source)
    if stored is None:
        raise VerificationError(
            f"Raw data {source} has no stored checksum ({CHECKSUM_FILE}), so a copy cannot be verified; "
            "run checksum resolution first (sl-worker checksum --create-missing).",
            path=source,
        )
    with os_errors("clear an interrupted copy beside", destination):
        remove_stale_partials(destination)
        present = _digest(destination) if destination.is_dir() else None
    if present is not None and present.checksum == stored:
        _LOG.info("Working copy %s already matches checksum %s; nothing to copy.", destination, stored)
        return _result(source, destination, present, copied=False)
    with os_errors("copy raw data to", destination):
        digest = _copy_verified(source, destination, stored)
    return _result(source, destination, digest, copied=True)


def _digest(folder: Path) -> TreeDigest | None:
    """The digest of an existing working copy, or None when it cannot be read whole (it is replaced)."""
    try:
        return hash_tree(folder, exclude=(CHECKSUM_FILE,))
    except OSError as exc:
        _LOG.warning("Working copy %s cannot be verified (%s); it will be replaced.", folder, exc)
        return None


def _copy_verified(source: Path, destination: Path, stored: str) -> TreeDigest:
    """Copies into a temporary sibling, verifies it against ``stored``, then renames it into place."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_sibling(destination)
    advice = (
        "the partial copy was removed: make room or fix permissions on the working volume, then prepare again"
    )
    try:
        digest = copy_verified(source, partial, advice=advice, exclude=(CHECKSUM_FILE,))
        if digest.checksum != stored:
            raise VerificationError(
                f"The copy of {source} does not match the stored checksum (stored {stored}, copy "
                f"{digest.checksum}); the copy was deleted: run checksum resolution to check the raw data.",
                path=source,
            )
        _replace_folder(partial, destination)
    except BaseException:
        remove_tree(partial)
        raise
    _LOG.info("Copied %s to %s and verified checksum %s.", source, destination, stored)
    return digest


def _replace_folder(new: Path, destination: Path) -> None:
    """Renames ``new`` to ``destination``, moving an existing (unverified) folder aside first.

    A kill between the renames leaves only temporary folders, which the next run removes: the storage
    volume holds the original.
    """
    old = partial_sibling(destination) if destination.exists() else None
    if old is not None:
        destination.rename(old)
    new.rename(destination)
    fsync_folder(destination.parent)
    if old is not None:
        remove_tree(old)


def _result(source: Path, destination: Path, digest: TreeDigest, *, copied: bool) -> TransferResult:
    return TransferResult(source, destination, digest.checksum, len(digest.files), digest.size_bytes, copied)
