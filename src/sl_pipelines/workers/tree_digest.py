"""What a folder tree holds, and its digests: one XXH3-128 per file and the tree checksum, in one read.

The tree checksum is the one of :mod:`sl_pipelines.workers.checksum`: every file in sorted relative-path
order, each contributing its length-delimited relative POSIX path, its size and its content. The
per-file digests are what a verified copy is compared with, file by file, and what the archive record
beside an archive lists (in ``xxhsum -H2`` form, see :mod:`sl_pipelines.workers.archive_record`).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import xxhash

from sl_pipelines.errors import WorkerError

#: Bytes read at a time while hashing or copying.
CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class TreeListing:
    """The entries of a folder tree, as relative POSIX paths.

    Attributes:
        files: regular files (and links to files), sorted: the order of the tree checksum.
        folders: sub-folders (not links to folders), parents before children.
        others: entries that are neither and cannot be copied as data: dangling links, links to
            folders, pipes, sockets, devices.
    """

    files: tuple[str, ...]
    folders: tuple[str, ...]
    others: tuple[str, ...]


@dataclass(frozen=True)
class TreeDigest:
    """The digests of a folder tree.

    Attributes:
        checksum: the tree checksum (XXH3-128 hex) without the excluded files.
        files: relative POSIX path → XXH3-128 hex of the content, for every file.
        size_bytes: the total size of every file.
    """

    checksum: str
    files: Mapping[str, str]
    size_bytes: int


def _raise(exc: OSError) -> None:
    raise exc


def list_tree(folder: Path) -> TreeListing:
    """Lists ``folder``'s files, sub-folders and other entries (links to folders are not followed).

    Raises:
        OSError: a folder of the tree cannot be read.
    """
    files: list[str] = []
    folders: list[str] = []
    others: list[str] = []
    for root, dirs, names in os.walk(folder, onerror=_raise):
        dirs.sort()
        base = Path(root).relative_to(folder)
        for name in names:
            (files if (Path(root) / name).is_file() else others).append((base / name).as_posix())
        for name in list(dirs):
            if (Path(root) / name).is_symlink():
                dirs.remove(name)
                others.append((base / name).as_posix())
            else:
                folders.append((base / name).as_posix())
    return TreeListing(tuple(sorted(files)), tuple(folders), tuple(sorted(others)))


class TreeHasher:
    """Builds a :class:`TreeDigest` from files fed in sorted order, each read once.

    Args:
        root: the folder the relative paths start from (named in errors).
        exclude: relative POSIX paths left out of the tree checksum (they keep their own digest).
    """

    def __init__(self, root: Path, exclude: Collection[str] = ()) -> None:
        self._root = root
        self._tree = xxhash.xxh3_128()
        self._exclude = frozenset(exclude)
        self._files: dict[str, str] = {}
        self._size = 0

    def add(self, relative: str, stream: int, view: memoryview, sink: int | None = None) -> None:
        """Hashes the open file ``stream`` as ``relative``, writing each chunk to ``sink`` when given.

        Raises:
            WorkerError: the file changed size while it was read.
            OSError: reading or writing failed.
        """
        size = os.fstat(stream).st_size
        in_tree = relative not in self._exclude
        if in_tree:
            name = relative.encode("utf-8", "surrogateescape")
            self._tree.update(struct.pack("<Q", len(name)) + name + struct.pack("<Q", size))
        digest = xxhash.xxh3_128()
        read = 0
        while count := os.readv(stream, [view]):
            chunk = view[:count]
            digest.update(chunk)
            if in_tree:
                self._tree.update(chunk)
            if sink is not None:
                write_all(sink, chunk)
            read += count
        if read != size:
            raise WorkerError(
                f"File {self._root / relative} changed size while it was read ({size} then {read} bytes); "
                "wait until nothing writes into the folder and run again."
            )
        self._files[relative] = str(digest.hexdigest())
        self._size += size

    def add_file(self, relative: str, view: memoryview) -> None:
        """Opens ``relative`` under the root and hashes it (:meth:`add`)."""
        fd = os.open(self._root / relative, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.add(relative, fd, view)
        finally:
            os.close(fd)

    def result(self) -> TreeDigest:
        """The digest of every file added so far."""
        return TreeDigest(str(self._tree.hexdigest()), dict(self._files), self._size)


def write_all(fd: int, data: memoryview) -> None:
    """Writes all of ``data`` to ``fd`` (``os.write`` may write less than asked)."""
    while data:
        data = data[os.write(fd, data) :]


def new_buffer() -> memoryview:
    """A reusable read buffer of :data:`CHUNK` bytes."""
    return memoryview(bytearray(CHUNK))


def hash_tree(
    folder: Path, *, exclude: Collection[str] = (), listing: TreeListing | None = None
) -> TreeDigest:
    """Reads every file under ``folder`` once and returns its digests.

    Args:
        folder: the root of the tree.
        exclude: relative paths left out of the tree checksum.
        listing: the tree's listing, when the caller has it already.

    Raises:
        WorkerError: a file changed size while it was read.
        OSError: the tree cannot be read.
    """
    files = (listing or list_tree(folder)).files
    hasher = TreeHasher(folder, exclude)
    view = new_buffer()
    for relative in files:
        hasher.add_file(relative, view)
    return hasher.result()


def hash_open_file(fd: int, view: memoryview) -> str:
    """The XXH3-128 hex digest of the open file ``fd`` from its current offset to its end.

    Raises:
        OSError: reading failed.
    """
    digest = xxhash.xxh3_128()
    while count := os.readv(fd, [view]):
        digest.update(view[:count])
    return str(digest.hexdigest())


def first_differences(expected: Mapping[str, str], found: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """Paths of ``found`` that are new or changed compared with ``expected``, and paths it lacks (sorted)."""
    new_or_changed = sorted(path for path, digest in found.items() if expected.get(path) != digest)
    missing = sorted(path for path in expected if path not in found)
    return new_or_changed, missing
