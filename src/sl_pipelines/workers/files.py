"""File helpers shared by the workers: atomic writes, temporary and aside sibling folders, folder fsync,
OS-error translation and one-sentence summaries of many failed files."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from sl_pipelines.errors import SlPipelinesError, WorkerError

#: Prefix of the temporary folders a worker copies into before renaming them into place.
PARTIAL_PREFIX = ".partial-"
#: Prefix of a working copy moved aside by data archiving to be deleted file by file.
ASIDE_PREFIX = ".archived-"


@contextmanager
def os_errors(action: str, path: Path) -> Iterator[None]:
    """Translates file-system errors into one :class:`WorkerError` naming the path; ours pass through.

    The sentence leads with the OS error, then the action and the path, so a tracker's short failure
    reason keeps what matters.
    """
    try:
        yield
    except SlPipelinesError:
        raise
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
        raise WorkerError(
            f"{exc.strerror or exc}: cannot {action} {path}{where}; check that the volume is mounted, has "
            "free space and that you may write it."
        ) from exc


def atomic_write_text(path: Path, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` as :func:`atomic_write_bytes` does."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a fsynced temporary file in the same folder and ``os.replace``.

    A reader sees the old content or the new one, never half a file.
    """
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with temp.open("wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def partial_sibling(destination: Path, prefix: str = PARTIAL_PREFIX) -> Path:
    """A fresh temporary folder name beside ``destination``, on the same volume so a rename is atomic."""
    return destination.with_name(f"{prefix}{destination.name}-{os.getpid()}-{secrets.token_hex(4)}")


def siblings(destination: Path, prefix: str = PARTIAL_PREFIX) -> list[Path]:
    """The folders beside ``destination`` named by :func:`partial_sibling` with ``prefix``, sorted."""
    if not destination.parent.is_dir():
        return []
    start = f"{prefix}{destination.name}-"
    return sorted(e for e in destination.parent.iterdir() if e.name.startswith(start) and e.is_dir())


def remove_stale_partials(destination: Path) -> None:
    """Deletes temporary folders left beside ``destination`` by workers that were killed mid-copy.

    A temporary folder is never the only copy of anything: its source still exists, or it was renamed
    into place, so it is removed whole.

    Raises:
        OSError: a temporary folder could not be removed (read-only volume, permissions).
    """
    for entry in siblings(destination):
        shutil.rmtree(entry)


def remove_tree(folder: Path) -> None:
    """Deletes ``folder`` whole, ignoring file-system errors (a best-effort cleanup).

    Unlike ``shutil.rmtree(ignore_errors=True)``, which swallows every exception, anything else (the
    :class:`~sl_pipelines.workers.protocol.WorkerInterrupted` of a SIGTERM) propagates.
    """

    def reraise_others(_function: object, _path: str, info: tuple[type, BaseException, object]) -> None:
        if not isinstance(info[1], OSError):
            raise info[1]

    shutil.rmtree(folder, onerror=reraise_others)


def fsync_folder(folder: Path) -> None:
    """Makes the entries of ``folder`` (creations, renames) durable.

    Raises:
        OSError: the folder cannot be opened or synced.
    """
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def summarise_failures(failures: Sequence[tuple[Path, OSError]], total: int, what: str) -> str:
    """One sentence that leads with the essentials: the OS error, how many files failed, the first path.

    Args:
        failures: each failed file and its error, in the order they happened (at least one).
        total: how many files the operation tried.
        what: what failed, as in "could not be copied to the storage volume".
    """
    path, first = failures[0]
    reason = first.strerror or str(first)
    others = {f.strerror or str(f) for _, f in failures[1:]} - {reason}
    also = f" (also: {', '.join(sorted(others))})" if others else ""
    return f"{reason}: {len(failures)} of {total} files {what} (first: {path}){also}"
