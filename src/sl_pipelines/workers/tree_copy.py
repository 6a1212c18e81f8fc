"""A durable, verified copy of a folder tree into a new folder.

Each file is read once: the bytes read are hashed and written to the copy, so the digests describe
exactly what was written. The writeback of each file starts as soon as it is written; one ``syncfs``
of the target's volume then commits them all at once (one journal commit instead of one per file).
The verification reads every copied file back after an ``fsync`` of its own (which reports its write
errors and costs nothing more once it is clean) and after dropping its pages from the page cache, so
it hashes what the volume holds; each folder is fsynced too. The copy is verified file by file (path
and XXH3-128) against the digests of the source.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Collection
from pathlib import Path

from sl_pipelines.errors import VerificationError, WorkerError
from sl_pipelines.workers.files import drop_cached_pages, fsync_folder, summarise_failures, sync_volume
from sl_pipelines.workers.tree_digest import (
    TreeDigest,
    TreeHasher,
    TreeListing,
    first_differences,
    hash_tree,
    list_tree,
    new_buffer,
)

_LOG = logging.getLogger("sl_pipelines")
#: Mode of a new file while it is written (its own mode is applied once it is complete).
_NEW_FILE_MODE = 0o600


def copy_verified(source: Path, target: Path, *, advice: str, exclude: Collection[str] = ()) -> TreeDigest:
    """Copies the folder ``source`` to the new folder ``target``, durably, and verifies the copy.

    Args:
        source: the folder to copy.
        target: the new folder; its parent must exist, and it must not.
        advice: what the caller's user should do when files could not be copied, ending the sentence.
        exclude: relative paths left out of the returned tree checksum (they are copied all the same).

    Returns:
        The digests of the source as it was read, which the copy matches file by file.

    Raises:
        WorkerError: the source holds entries that are not files or folders, a file changed while it
            was copied, or files could not be copied (one sentence: the OS error, how many, the first).
        VerificationError: the copy read back from the volume does not match what was read.
        OSError: the target folder could not be created or synced.
    """
    listing = list_tree(source)
    refuse_odd_entries(source, listing)
    target.mkdir()
    for folder in listing.folders:
        (target / folder).mkdir()
    digest = _copy_files(source, target, listing, exclude, advice)
    sync_volume(target)
    copied = hash_tree(target, exclude=exclude, listing=listing, from_disk=True)
    _sync_folders(source, target, listing)
    if copied.files != digest.files:
        changed, missing = first_differences(digest.files, copied.files)
        first = (changed or missing)[0]
        raise VerificationError(
            f"The copy {target} does not match {source} read back from the volume ({len(changed)} files "
            f"differ, {len(missing)} missing, first: {first}); check the volume that holds {target}.",
            path=target / first,
        )
    _LOG.info("Copied %d files from %s to %s, synced and verified.", len(digest.files), source, target)
    return digest


def refuse_odd_entries(folder: Path, listing: TreeListing) -> None:
    """Raises :class:`WorkerError` when ``folder`` holds entries a verified copy cannot carry."""
    if listing.others:
        raise WorkerError(
            f"Cannot copy {folder} because {len(listing.others)} entries are neither files nor folders "
            f"(first: {folder / listing.others[0]}, a dangling link, a link to a folder, a pipe or a "
            "device): replace them by what they point to or remove them, then run again."
        )


def _copy_files(
    source: Path, target: Path, listing: TreeListing, exclude: Collection[str], advice: str
) -> TreeDigest:
    """Copies every file, carrying on after a failed one so the summary can count them all."""
    hasher = TreeHasher(source, exclude)
    view = new_buffer()
    failures: list[tuple[Path, OSError]] = []
    for relative in listing.files:
        try:
            _copy_file(source, target, relative, hasher, view)
        except OSError as exc:
            failures.append((source / relative, exc))
    if failures:
        summary = summarise_failures(failures, len(listing.files), "could not be copied")
        raise WorkerError(f"{summary} to {target.parent}; {advice}.")
    return hasher.result()


def _copy_file(source: Path, target: Path, relative: str, hasher: TreeHasher, view: memoryview) -> None:
    src = os.open(source / relative, os.O_RDONLY | os.O_CLOEXEC)
    try:
        status = os.fstat(src)
        dst = os.open(target / relative, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _NEW_FILE_MODE)
        try:
            hasher.add(relative, src, view, sink=dst)
            os.fchmod(dst, stat.S_IMODE(status.st_mode))
            os.utime(dst, ns=(status.st_atime_ns, status.st_mtime_ns))
            drop_cached_pages(dst)  # starts its writeback now
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _sync_folders(source: Path, target: Path, listing: TreeListing) -> None:
    """Gives the copied folders their modes and times, then fsyncs them, deepest first."""
    for folder in (*reversed(listing.folders), "."):
        status = (source / folder).stat()
        os.chmod(target / folder, stat.S_IMODE(status.st_mode))
        os.utime(target / folder, ns=(status.st_atime_ns, status.st_mtime_ns))
        fsync_folder(target / folder)
