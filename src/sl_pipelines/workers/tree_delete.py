"""Deleting exactly the verified files of a folder tree, and nothing else.

Each file is opened, hashed and deleted only when its path and XXH3-128 are in the reference (the
digests of a verified copy) and it did not change while it was read. Its status is checked once more
through the still-open file after the delete: a file written to in between is put back. Files that are
not in the reference, or differ from it, stay where they are, and so do the folders that hold them.
Deletes go through folder descriptors (``unlinkat``), so a folder renamed meanwhile is never followed.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sl_pipelines.workers.tree_digest import hash_open_file, new_buffer, write_all

_LOG = logging.getLogger("sl_pipelines")
_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class DeleteOutcome:
    """What a verified delete did.

    Attributes:
        deleted: how many files were deleted.
        kept: relative paths of the entries kept because they are not in the reference or differ from
            it (they appeared or changed after the verification).
        failures: relative paths of the verified files that could not be deleted, with the OS error.
    """

    deleted: int = 0
    kept: list[str] = field(default_factory=list)
    failures: list[tuple[str, OSError]] = field(default_factory=list)


def delete_verified(folder: Path, reference: Mapping[str, str]) -> DeleteOutcome:
    """Deletes the files under ``folder`` that match ``reference``, then the folders left empty.

    Args:
        folder: the tree to delete.
        reference: relative POSIX path → XXH3-128 hex of the verified files.

    Raises:
        OSError: ``folder`` itself cannot be opened.
    """
    deleter = _Deleter(reference)
    fd = os.open(folder, _FOLDER_FLAGS)
    try:
        deleter.delete_in(fd, "")
    finally:
        os.close(fd)
    outcome = deleter.outcome
    if not outcome.kept and not outcome.failures:
        try:
            folder.rmdir()
        except OSError as exc:
            outcome.failures.append((".", exc))
    return outcome


class _Deleter:
    """Walks a tree through folder descriptors, deleting verified files and recording the rest."""

    def __init__(self, reference: Mapping[str, str]) -> None:
        self.reference = reference
        self.outcome = DeleteOutcome()
        self.view = new_buffer()

    def delete_in(self, fd: int, prefix: str) -> None:
        with os.scandir(fd) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
        for entry in entries:
            relative = prefix + entry.name
            if entry.is_dir(follow_symlinks=False):
                self.delete_folder(fd, entry.name, relative)
            elif relative in self.reference and entry.is_file():
                self.delete_file(fd, entry.name, relative)
            else:
                self.outcome.kept.append(relative)

    def delete_folder(self, parent: int, name: str, relative: str) -> None:
        try:
            fd = os.open(name, _FOLDER_FLAGS, dir_fd=parent)
        except OSError as exc:
            self.outcome.failures.append((relative, exc))
            return
        try:
            self.delete_in(fd, relative + "/")
        finally:
            os.close(fd)
        try:
            os.rmdir(name, dir_fd=parent)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                self.outcome.failures.append((relative, exc))

    def delete_file(self, parent: int, name: str, relative: str) -> None:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=parent)
        except OSError as exc:
            self.outcome.failures.append((relative, exc))
            return
        try:
            if self._unlink_if_verified(fd, parent, name, relative):
                self.outcome.deleted += 1
            else:
                self.outcome.kept.append(relative)
        except OSError as exc:
            self.outcome.failures.append((relative, exc))
        finally:
            os.close(fd)

    def _unlink_if_verified(self, fd: int, parent: int, name: str, relative: str) -> bool:
        """Deletes the open file ``fd`` (``name`` in ``parent``) when it is the verified one."""
        before = os.fstat(fd)
        digest = hash_open_file(fd, self.view)
        verified = os.fstat(fd)
        if digest != self.reference[relative] or _status(before) != _status(verified):
            return False
        os.unlink(name, dir_fd=parent)
        if _status(os.fstat(fd))[:2] != _status(verified)[:2]:
            _put_back(fd, parent, name, relative, self.view)
            return False
        return True


def _status(status: os.stat_result) -> tuple[int, int, int]:
    """What changes when a file is written: size, modification time, status-change time."""
    return status.st_size, status.st_mtime_ns, status.st_ctime_ns


def _put_back(fd: int, parent: int, name: str, relative: str, view: memoryview) -> None:
    """Writes the content of the deleted but still open file ``fd`` back under its name (or beside it)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    try:
        out = os.open(name, flags, mode, dir_fd=parent)
    except FileExistsError:
        name = f"{name}.kept-{secrets.token_hex(4)}"
        out = os.open(name, flags, mode, dir_fd=parent)
    try:
        offset = 0
        while count := os.preadv(fd, [view], offset):
            write_all(out, view[:count])
            offset += count
        os.fsync(out)
    finally:
        os.close(out)
    _LOG.warning("File %s was written to while it was deleted; it was put back as %s.", relative, name)
