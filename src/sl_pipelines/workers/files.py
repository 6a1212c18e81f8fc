"""File helpers shared by the workers: atomic writes, temporary sibling folders, OS-error translation."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sl_pipelines.errors import SlPipelinesError, WorkerError

#: Prefix of the temporary folders a worker copies into before renaming them into place.
PARTIAL_PREFIX = ".partial-"


@contextmanager
def os_errors(action: str, path: Path) -> Iterator[None]:
    """Translates file-system errors into one :class:`WorkerError` naming the path; ours pass through."""
    try:
        yield
    except SlPipelinesError:
        raise
    except OSError as exc:
        where = exc.filename or path
        raise WorkerError(
            f"Cannot {action} {path} because {exc.strerror or exc} ({where}): "
            "check that the volume is mounted, has free space and that you may write it."
        ) from exc


def atomic_write_text(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` through a flushed temporary file in the same folder and ``os.replace``.

    A reader sees the old content or the new one, never half a file.
    """
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with temp.open("w", encoding="utf-8", newline="\n") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def partial_sibling(destination: Path) -> Path:
    """A fresh temporary folder name beside ``destination``, on the same volume so a rename is atomic."""
    return destination.with_name(f"{PARTIAL_PREFIX}{destination.name}-{os.getpid()}-{secrets.token_hex(4)}")


def remove_stale_partials(destination: Path) -> None:
    """Deletes temporary folders left beside ``destination`` by workers that were killed mid-copy."""
    if not destination.parent.is_dir():
        return
    for entry in destination.parent.iterdir():
        if entry.name.startswith(f"{PARTIAL_PREFIX}{destination.name}-") and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


def copy_tree(source: Path, target: Path) -> None:
    """Copies the folder ``source`` to the new folder ``target`` (contents and modification times)."""
    shutil.copytree(source, target, symlinks=False, copy_function=shutil.copy2)


def tree_size(folder: Path) -> tuple[int, int]:
    """Returns the number of files under ``folder`` and their total size in bytes."""
    files = 0
    size = 0
    for root, _dirs, names in os.walk(folder):
        for name in names:
            files += 1
            size += (Path(root) / name).stat().st_size
    return files, size
