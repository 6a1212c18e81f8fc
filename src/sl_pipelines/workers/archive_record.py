"""The record of a verified archive: every file and its XXH3-128, in a file beside the archive.

``<storage_session>/processed_data.xxh128`` lists each archived file as ``xxhsum -H2`` does (the hex
digest, two spaces, the path from the session folder), so anyone can check an archive independently::

    cd <storage_session> && xxhsum -c processed_data.xxh128

A path holding a backslash, a newline or a carriage return is written escaped, the way GNU checksum
tools do (the line starts with a backslash). The record is written durably before the archive is
renamed into place, so an archive with a record was verified against it; an archive without one was
made before records existed, or by hand.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from sl_pipelines.errors import VerificationError
from sl_pipelines.workers.files import atomic_write_bytes

#: The record's suffix: the archive folder's name plus this.
RECORD_SUFFIX = ".xxh128"
_LINE = re.compile(rb"^(\\?)([0-9a-f]{32})  (.*)$")
_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r"}
_UNESCAPES = {b"\\\\": b"\\", b"\\n": b"\n", b"\\r": b"\r"}


def record_path(archive: Path) -> Path:
    """The record file of the archive folder ``archive``."""
    return archive.with_name(archive.name + RECORD_SUFFIX)


def write_record(archive: Path, files: Mapping[str, str]) -> Path:
    """Writes the record of ``archive`` (relative path → XXH3-128 hex) durably; returns its path.

    The file is written to a temporary name, fsynced and renamed; the caller fsyncs the folder with
    the archive's own rename.

    Raises:
        OSError: the record could not be written.
    """
    path = record_path(archive)
    lines = [_line(archive.name, relative, digest) for relative, digest in sorted(files.items())]
    atomic_write_bytes(path, b"".join(lines))
    return path


def read_record(archive: Path) -> dict[str, str] | None:
    """The record of ``archive`` (relative path → XXH3-128 hex), or None when it has none.

    Raises:
        VerificationError: the record exists but is not a record of this archive.
        OSError: the record could not be read.
    """
    path = record_path(archive)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    prefix = os.fsencode(archive.name) + b"/"
    files: dict[str, str] = {}
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw:
            continue
        entry = _parse(raw, prefix)
        if entry is None:
            raise VerificationError(
                f"Archive record {path} is damaged at line {number}; compare the archive {archive} with "
                "the working copy by hand before deleting either.",
                path=path,
            )
        files[entry[0]] = entry[1]
    return files


def _parse(raw: bytes, prefix: bytes) -> tuple[str, str] | None:
    """The relative path and digest of one record line, or None when it is not one of this archive."""
    match = _LINE.match(raw)
    if match is None:
        return None
    escaped, digest, name = match.groups()
    if escaped:
        name = _unescape(name)
    if not name.startswith(prefix):
        return None
    return os.fsdecode(name[len(prefix) :]), digest.decode()


def _line(folder: str, relative: str, digest: str) -> bytes:
    name = f"{folder}/{relative}"
    escaped = "".join(_ESCAPES.get(c, c) for c in name)
    flag = b"\\" if escaped != name else b""
    return flag + digest.encode() + b"  " + os.fsencode(escaped) + b"\n"


def _unescape(name: bytes) -> bytes:
    return re.sub(rb"\\[\\nr]", lambda m: _UNESCAPES[m.group(0)], name)
