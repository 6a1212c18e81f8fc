"""Making a copy durable in batches, and reading it back from the volume rather than from memory.

One ``syncfs`` of the volume writes out every file and folder written on it and commits them at once,
where an ``fsync`` per file would cost one journal commit (and one disk cache flush) each. Its file
descriptor is opened before the first write, so the ``syncfs`` reports any write error on the volume
since (Linux 5.8 and later). Where ``syncfs`` is missing, the caller fsyncs each file and folder.

Dropping a synced file's pages from the page cache and asking the kernel to read it ahead makes the
volume read it back while the caller copies the next files; hashing it then hashes what the volume
returned.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from types import TracebackType

#: ``syncfs`` from the C library, or None where there is none.
_SYNCFS = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None) if os.name == "posix" else None


class VolumeSync:
    """The ``syncfs`` of the volume that holds ``folder``; open it before writing, close it after.

    Raises:
        OSError: ``folder`` cannot be opened.
    """

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) if _SYNCFS else None

    def __enter__(self) -> VolumeSync:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def sync(self) -> bool:
        """Writes out and commits everything written on the volume; False when ``syncfs`` is missing.

        Raises:
            OSError: the volume reported a write error since this object was made.
        """
        if _SYNCFS is None or self._fd is None:
            return False
        if _SYNCFS(self._fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), str(self._folder))
        return True


def read_back(fd: int) -> None:
    """Drops the synced file's pages from the page cache and starts reading it again from the volume.

    Where ``posix_fadvise`` is missing this does nothing, and the file is read from memory.
    """
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)


def start_writeback(fd: int) -> None:
    """Starts writing the file's dirty pages now, so the next ``syncfs`` finds less left to write."""
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
