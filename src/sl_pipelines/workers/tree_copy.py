"""A durable, verified copy of a folder tree into a new folder.

Each file is read once: the bytes read are hashed and written to the copy, so the digests describe
exactly what was written. The copy goes in batches (:data:`BATCH_BYTES`, :data:`BATCH_FILES`): once a
batch is written, one ``syncfs`` makes it durable (see :mod:`sl_pipelines.workers.durability`), its
pages are dropped from the page cache and the volume reads it back while the next batch is copied;
then it is hashed again, so the verification is of what the volume holds, not of what is in memory.
The copy is verified file by file (path and XXH3-128) against the digests of the source.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Collection
from pathlib import Path
from types import TracebackType

from sl_pipelines.errors import VerificationError, WorkerError
from sl_pipelines.workers.durability import VolumeSync, read_back, start_writeback
from sl_pipelines.workers.files import fsync_folder, summarise_failures
from sl_pipelines.workers.tree_digest import (
    TreeDigest,
    TreeHasher,
    TreeListing,
    first_differences,
    hash_open_file,
    list_tree,
    new_buffer,
)

_LOG = logging.getLogger("sl_pipelines")
#: Mode of a new file while it is written (its own mode is applied once it is complete).
_NEW_FILE_MODE = 0o600
#: At most this many bytes, or :data:`BATCH_FILES` files, are copied before they are synced and read back.
BATCH_BYTES = 64 * 1024 * 1024
#: At most this many files are copied before they are synced and read back (each keeps a descriptor).
BATCH_FILES = 256


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
        OSError: the target folder could not be created, synced or read back.
    """
    listing = list_tree(source)
    refuse_odd_entries(source, listing)
    target.mkdir()
    for folder in listing.folders:
        (target / folder).mkdir()
    with VolumeSync(target) as volume, _Copier(source, target, exclude, volume) as copier:
        for relative in listing.files:
            copier.copy(relative)
        copier.finish()
        if copier.failures:
            summary = summarise_failures(copier.failures, len(listing.files), "could not be copied")
            raise WorkerError(f"{summary} to {target.parent}; {advice}.")
        _sync_folders(source, target, listing, volume)
    digest = copier.hasher.result()
    _check(source, target, digest, copier.read_back)
    _LOG.info("Copied %d files from %s to %s, synced and verified.", len(digest.files), source, target)
    return digest


def _check(source: Path, target: Path, digest: TreeDigest, read_back: dict[str, str]) -> None:
    if read_back == digest.files:
        return
    changed, missing = first_differences(digest.files, read_back)
    first = (changed or missing)[0]
    raise VerificationError(
        f"The copy {target} read back from the volume does not match {source} ({len(changed)} files "
        f"differ, {len(missing)} missing, first: {first}); check the volume that holds {target}.",
        path=target / first,
    )


def refuse_odd_entries(folder: Path, listing: TreeListing) -> None:
    """Raises :class:`WorkerError` when ``folder`` holds entries a verified copy cannot carry."""
    if listing.others:
        raise WorkerError(
            f"Cannot copy {folder} because {len(listing.others)} entries are neither files nor folders "
            f"(first: {folder / listing.others[0]}, a dangling link, a link to a folder, a pipe or a "
            "device): replace them by what they point to or remove them, then run again."
        )


class _Copier:
    """Copies files one by one, and syncs, reads back and hashes them batch by batch."""

    def __init__(self, source: Path, target: Path, exclude: Collection[str], volume: VolumeSync) -> None:
        self.source, self.target, self.volume = source, target, volume
        self.hasher = TreeHasher(source, exclude)
        self.view = new_buffer()
        self.failures: list[tuple[Path, OSError]] = []
        self.read_back: dict[str, str] = {}
        self._written: list[tuple[str, int]] = []  # copied, not synced yet: (relative path, descriptor)
        self._reading: list[tuple[str, int]] = []  # synced and being read back from the volume
        self._bytes = 0

    def __enter__(self) -> _Copier:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, trace: TracebackType | None
    ) -> None:
        for _, fd in (*self._written, *self._reading):
            os.close(fd)
        self._written, self._reading = [], []

    def copy(self, relative: str) -> None:
        """Copies one file; a failure is recorded and the copy goes on, to count them all."""
        try:
            fd = _copy_file(self.source, self.target, relative, self.hasher, self.view)
        except OSError as exc:
            self.failures.append((self.source / relative, exc))
            return
        self._written.append((relative, fd))
        self._bytes += os.fstat(fd).st_size
        if len(self._written) >= BATCH_FILES or self._bytes >= BATCH_BYTES:
            self._next_batch()

    def finish(self) -> None:
        """Syncs, reads back and hashes what is left."""
        self._next_batch()
        self._hash_read_back()

    def _next_batch(self) -> None:
        self._hash_read_back()
        if self.failures:
            return
        synced = self.volume.sync()
        for _, fd in self._written:
            if not synced:
                os.fsync(fd)
            read_back(fd)
        self._reading, self._written, self._bytes = self._written, [], 0

    def _hash_read_back(self) -> None:
        while self._reading:
            relative, fd = self._reading.pop(0)
            try:
                os.lseek(fd, 0, os.SEEK_SET)
                self.read_back[relative] = hash_open_file(fd, self.view)
            finally:
                os.close(fd)


def _copy_file(source: Path, target: Path, relative: str, hasher: TreeHasher, view: memoryview) -> int:
    """Copies one file, hashing what it reads; returns the copy's open descriptor (read and write)."""
    src = os.open(source / relative, os.O_RDONLY | os.O_CLOEXEC)
    try:
        status = os.fstat(src)
        dst = os.open(target / relative, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _NEW_FILE_MODE)
        try:
            hasher.add(relative, src, view, sink=dst)
            os.fchmod(dst, stat.S_IMODE(status.st_mode))
            os.utime(dst, ns=(status.st_atime_ns, status.st_mtime_ns))
            start_writeback(dst)
        except BaseException:
            os.close(dst)
            raise
        return dst
    finally:
        os.close(src)


def _sync_folders(source: Path, target: Path, listing: TreeListing, volume: VolumeSync) -> None:
    """Gives the copied folders their modes and times and makes them durable."""
    for folder in (*reversed(listing.folders), "."):
        status = (source / folder).stat()
        os.chmod(target / folder, stat.S_IMODE(status.st_mode))
        os.utime(target / folder, ns=(status.st_atime_ns, status.st_mtime_ns))
    if not volume.sync():
        for folder in (*reversed(listing.folders), "."):
            fsync_folder(target / folder)
