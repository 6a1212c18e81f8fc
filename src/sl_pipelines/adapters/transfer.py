"""Folder-tree transfers over one SSH connection, verified after the copy.

Small files travel together in one tar stream over one exec channel (one round trip for thousands of
files); big files go one by one through the transport's single, pipelined SFTP client. Modification
times are preserved both ways. Afterwards ONE remote command lists the remote tree with sizes (and,
with ``Verify.HASH``, xxHash3-64 digests computed by the server's Python — the server environment
provides ``xxhash``; without it the script falls back to SHA-256 and both sides use that), and every
file is compared. This module does not import paramiko: it works through the transport's methods.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import tarfile
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import xxhash

from sl_pipelines.core.framing import MARKER, split_sections
from sl_pipelines.errors import TransferError

if TYPE_CHECKING:
    from sl_pipelines.adapters.ssh import SSHTransport

SMALL_FILE_BYTES = 1024 * 1024
_TAR_START = f"{MARKER} tar"
"""Printed before a tar stream that comes back, so that a login banner before it can be skipped."""
"""Files below this size go in the tar stream; bigger ones over SFTP."""

_LIST_SCRIPT = r"""
import json, os, sys
root, want = sys.argv[1], sys.argv[2] == "1"
try:
    import xxhash
    algorithm, new = "xxh3_64", xxhash.xxh3_64
except ImportError:
    import hashlib
    algorithm, new = "sha256", hashlib.sha256
def digest(path):
    h = new()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
if not os.path.isdir(root):
    print(json.dumps(None)); sys.exit(0)
dirs, files = [], {}
for top, names, leaves in os.walk(root):
    rel = os.path.relpath(top, root)
    dirs += [os.path.normpath(os.path.join(rel, n)) for n in names
             if not os.path.islink(os.path.join(top, n))]
    for n in leaves:
        p = os.path.join(top, n)
        if os.path.islink(p) or not os.path.isfile(p):
            continue
        st = os.stat(p)
        files[os.path.normpath(os.path.join(rel, n))] = [
            st.st_size, int(st.st_mtime), digest(p) if want else None]
print(json.dumps({"algorithm": algorithm if want else None, "dirs": dirs, "files": files}))
"""


class Verify(StrEnum):
    """How a tree transfer is checked afterwards."""

    NONE = "none"
    SIZE = "size"
    HASH = "hash"


@dataclass(frozen=True)
class TransferReport:
    """What a tree transfer did.

    Attributes:
        source: the tree that was copied.
        destination: where it went.
        files: how many files were copied.
        bytes: how many bytes were copied.
        seconds: wall time of copy and verification.
        verified: how the copy was checked.
    """

    source: str
    destination: str
    files: int
    bytes: int
    seconds: float
    verified: Verify


@dataclass(frozen=True)
class _Entry:
    size: int
    mtime: int
    digest: str | None = None


@dataclass(frozen=True)
class _Tree:
    dirs: tuple[str, ...]
    files: dict[str, _Entry]
    algorithm: str | None = None


def check_removable(path: PurePosixPath) -> None:
    """Refuses to remove a relative path, ``..`` tricks, or anything within one level of ``/``."""
    if not path.is_absolute() or ".." in path.parts or len(path.parts) < 3:
        raise TransferError(
            f"Refusing to remove {str(path)!r}: only absolute paths two or more folders deep can be removed.",
            path=path,
        )


def put_tree(
    transport: SSHTransport, local: Path, remote: PurePosixPath, *, verify: Verify
) -> TransferReport:
    """Uploads the folder ``local`` to ``remote`` (created with its parents); returns a report."""
    started = time.monotonic()
    tree = _scan_local(local, with_digest=False)
    small = [name for name, entry in tree.files.items() if entry.size < SMALL_FILE_BYTES]
    quoted = shlex.quote(str(remote))
    stream = transport.open_stream(f"mkdir -p -- {quoted} && tar -x --no-same-owner -C {quoted} -f -")
    with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT, bufsize=1 << 20) as archive:  # type: ignore[call-overload]
        for name in tree.dirs:
            archive.add(local / name, arcname=name, recursive=False)
        for name in small:
            archive.add(local / name, arcname=name, recursive=False)
    check_stream(transport, stream.finish(), remote)
    transport.count_bytes(sum(tree.files[name].size for name in small))
    for name, entry in tree.files.items():
        if entry.size >= SMALL_FILE_BYTES:
            transport.put_file(local / name, remote / name)
    if verify is not Verify.NONE:
        copied = _scan_remote(transport, remote, with_digest=verify is Verify.HASH)
        if verify is Verify.HASH:
            tree = _scan_local(local, with_digest=True, algorithm=copied.algorithm)
        _compare(tree, copied, local, remote)
    return _report(local, remote, tree, started, verify)


def get_tree(
    transport: SSHTransport, remote: PurePosixPath, local: Path, *, verify: Verify
) -> TransferReport:
    """Downloads the folder ``remote`` into ``local`` (created when missing); returns a report."""
    started = time.monotonic()
    tree = _scan_remote(transport, remote, with_digest=verify is Verify.HASH)
    local.mkdir(parents=True, exist_ok=True)
    for name in tree.dirs:
        (local / name).mkdir(parents=True, exist_ok=True)
    small = [name for name, entry in tree.files.items() if entry.size < SMALL_FILE_BYTES]
    if small:
        stream = transport.open_stream(
            f"echo '{_TAR_START}'; tar -c -C {shlex.quote(str(remote))} --null -T - -f -"
        )
        stream.write(b"".join(os.fsencode(name) + b"\0" for name in small))
        stream.close_input()
        stream.skip_through(f"{_TAR_START}\n".encode())  # a login banner may come first
        with tarfile.open(fileobj=stream, mode="r|", bufsize=1 << 20) as archive:  # type: ignore[call-overload]
            archive.extractall(local, filter="data")
        check_stream(transport, stream.finish(), remote)
        transport.count_bytes(sum(tree.files[name].size for name in small))
    for name, entry in tree.files.items():
        if entry.size >= SMALL_FILE_BYTES:
            transport.get_file(remote / name, local / name)
    if verify is not Verify.NONE:
        copied = _scan_local(local, with_digest=verify is Verify.HASH, algorithm=tree.algorithm)
        _compare(tree, copied, remote, local)
    return _report(remote, local, tree, started, verify)


def check_stream(transport: SSHTransport, result: Any, remote: PurePosixPath) -> None:
    if result.exit_code != 0:
        raise TransferError(
            f"tar on {transport.host} exited {result.exit_code} while copying {remote}: "
            f"{result.stderr.strip() or 'no message'}; check the path, free space and permissions.",
            host=transport.host,
            path=remote,
        )


def _scan_remote(transport: SSHTransport, remote: PurePosixPath, *, with_digest: bool) -> _Tree:
    """Lists the remote tree in one command; only its framed output counts (a login banner may come first)."""
    python = transport.settings.remote_python
    command = (
        f"echo '{MARKER} begin listing'; {python} -c {shlex.quote(_LIST_SCRIPT)} {shlex.quote(str(remote))} "
        f'{1 if with_digest else 0}; echo "{MARKER} end $?"'
    )
    result = transport.run(command)
    section = next((s for s in split_sections(result.stdout) if s.name == "listing"), None)
    if section is None or not section.ok:
        status = section.status if section is not None else "no answer"
        raise TransferError(
            f"Listing {remote} on {transport.host} failed (exit {status}: "
            f"{' '.join(result.stderr.split()) or 'no message'}); check that {python} runs there.",
            host=transport.host,
            path=remote,
        )
    try:
        data = json.loads("\n".join(section.lines))
    except json.JSONDecodeError as exc:
        raise TransferError(
            f"The listing of {remote} on {transport.host} was not readable ({exc}); check that "
            f"{transport.settings.remote_python} runs there.",
            host=transport.host,
            path=remote,
        ) from exc
    if data is None:
        raise TransferError(
            f"{remote} is not a folder on {transport.host}.", host=transport.host, path=remote
        )
    files = {name: _Entry(size, mtime, digest) for name, (size, mtime, digest) in data["files"].items()}
    return _Tree(tuple(data["dirs"]), files, data["algorithm"])


def _scan_local(local: Path, *, with_digest: bool, algorithm: str | None = None) -> _Tree:
    if not local.is_dir():
        raise TransferError(f"{local} is not a folder on this computer.", path=local)
    dirs: list[str] = []
    files: dict[str, _Entry] = {}
    for top, names, leaves in os.walk(local):
        relative = Path(top).relative_to(local)
        dirs += [
            (relative / name).as_posix() for name in sorted(names) if not (Path(top) / name).is_symlink()
        ]
        for name in sorted(leaves):
            path = Path(top) / name
            if path.is_symlink() or not path.is_file():
                continue
            info = path.stat()
            digest = _digest(path, algorithm or "xxh3_64") if with_digest else None
            files[(relative / name).as_posix()] = _Entry(info.st_size, int(info.st_mtime), digest)
    return _Tree(tuple(dirs), files, algorithm)


def _digest(path: Path, algorithm: str) -> str:
    hasher: Any = xxhash.xxh3_64() if algorithm == "xxh3_64" else hashlib.new(algorithm)
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            hasher.update(block)
    return str(hasher.hexdigest())


def _compare(expected: _Tree, actual: _Tree, source: object, destination: object) -> None:
    """Raises TransferError naming the first file that is missing or differs."""
    for name, entry in expected.files.items():
        found = actual.files.get(name)
        problem = ""
        if found is None:
            problem = "is missing"
        elif found.size != entry.size:
            problem = f"has {found.size} bytes instead of {entry.size}"
        elif entry.digest is not None and found.digest is not None and entry.digest != found.digest:
            problem = "has different content (checksum mismatch)"
        if problem:
            raise TransferError(
                f"The copy of {source}/{name} at {destination}/{name} {problem}; the transfer did not "
                "verify, copy the tree again.",
                path=f"{destination}/{name}",
            )


def _report(
    source: object, destination: object, tree: _Tree, started: float, verify: Verify
) -> TransferReport:
    return TransferReport(
        source=str(source),
        destination=str(destination),
        files=len(tree.files),
        bytes=sum(entry.size for entry in tree.files.values()),
        seconds=time.monotonic() - started,
        verified=verify,
    )
