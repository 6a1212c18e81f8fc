"""Checksum resolution: an xxHash of a session's raw-data tree, compared with the stored checksum.

The checksum is the XXH3-128 hex digest of every file of the tree in sorted relative-path order. For
each file it hashes the relative POSIX path, the file size and the content, each length-delimited, so a
renamed, moved, truncated or changed file all change the checksum. Empty folders do not count. The
stored checksum file (``raw_data/ax_checksum.txt``) is excluded from its own checksum.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from sl_pipelines.core.layout import SessionPaths
from sl_pipelines.errors import SessionNotFoundError, VerificationError, WorkerError
from sl_pipelines.workers.files import atomic_write_text, os_errors
from sl_pipelines.workers.tree_digest import hash_tree

_LOG = logging.getLogger("sl_pipelines")

#: The stored checksum of a session's raw data, inside ``raw_data``.
CHECKSUM_FILE = "ax_checksum.txt"


@dataclass(frozen=True)
class ChecksumResult:
    """The outcome of checksum resolution.

    Attributes:
        folder: the raw-data folder that was hashed.
        checksum: the checksum calculated now (hex).
        stored: the checksum stored before this run, or None when there was none.
        written: True when this run wrote the checksum file (created or recalculated).
    """

    folder: Path
    checksum: str
    stored: str | None
    written: bool


def calculate_checksum(folder: Path, *, exclude: Collection[str] = (CHECKSUM_FILE,)) -> str:
    """Returns the XXH3-128 hex checksum of every file under ``folder``.

    Args:
        folder: the root of the tree.
        exclude: relative POSIX paths (from ``folder``) of files to leave out.

    Raises:
        WorkerError: the folder cannot be read, or a file changed size while it was hashed.
    """
    with os_errors("hash", folder):
        if not folder.is_dir():
            raise WorkerError(f"Cannot hash {folder} because it is not a folder; check the session path.")
        return hash_tree(folder, exclude=exclude).checksum


def read_stored_checksum(raw_data: Path) -> str | None:
    """Returns the checksum stored in ``raw_data/ax_checksum.txt``, or None when there is none."""
    path = raw_data / CHECKSUM_FILE
    with os_errors("read the stored checksum", path):
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
    return text.strip().lower() or None


def checksum_text(checksum: str) -> str:
    """The content of ``ax_checksum.txt`` holding ``checksum`` (also what an upload writes on the server)."""
    return checksum + "\n"


def write_checksum(raw_data: Path, checksum: str) -> Path:
    """Writes ``checksum`` to ``raw_data/ax_checksum.txt`` atomically; returns the file's path."""
    path = raw_data / CHECKSUM_FILE
    with os_errors("write the checksum", path):
        atomic_write_text(path, checksum_text(checksum))
    return path


def resolve_checksum(
    paths: SessionPaths, *, create_missing: bool = False, recalculate: bool = False
) -> ChecksumResult:
    """Verifies the session's raw data against its stored checksum (or stores a new one).

    Args:
        paths: the session.
        create_missing: store the calculated checksum when none is stored, instead of failing.
        recalculate: store the calculated checksum even when one is stored (after the data was
            deliberately changed); the old value is logged.

    Raises:
        SessionNotFoundError: the session has no raw-data folder.
        VerificationError: the calculated checksum differs from the stored one, or none is stored and
            ``create_missing`` is False.
    """
    raw_data = Path(paths.raw_data)
    if not raw_data.is_dir():
        raise SessionNotFoundError(
            f"Session {paths.session!r} has no raw data at {raw_data}; check the project, animal and "
            "session names and the storage root.",
            session=paths.session,
        )
    stored = read_stored_checksum(raw_data)
    checksum = calculate_checksum(raw_data)
    if recalculate or (stored is None and create_missing):
        write_checksum(raw_data, checksum)
        _LOG.info("Stored checksum %s for %s (was %s).", checksum, raw_data, stored)
        return ChecksumResult(raw_data, checksum, stored, written=True)
    if stored is None:
        raise VerificationError(
            f"Raw data {raw_data} has no stored checksum ({CHECKSUM_FILE}); run the checksum with "
            "--create-missing to store the current one.",
            path=raw_data,
        )
    if stored != checksum:
        raise VerificationError(
            f"Raw data {raw_data} does not match its stored checksum (stored {stored}, calculated "
            f"{checksum}); restore the data from the acquisition PC, or run with --recalculate if the "
            "change was deliberate.",
            path=raw_data,
        )
    _LOG.info("Raw data %s matches its stored checksum %s.", raw_data, checksum)
    return ChecksumResult(raw_data, checksum, stored, written=False)
