"""Uploading a session's raw data from this computer to the storage volume: verified and resumable.

The local folder is hashed first (XXH3-128 per file, and the tree checksum of
:mod:`sl_pipelines.workers.checksum`). Files go into a partial folder beside ``raw_data`` — small ones
together in one tar stream, big ones one by one over SFTP — and the server hashes what arrived in
batches, recording the files that match in a manifest. An interrupted upload run again sends only what
is missing: files the manifest vouches for are skipped, complete but unrecorded files are hashed on the
server, and a file cut short is completed from where it stops when its first bytes are right. Only when
every file is there is the checksum file (``ax_checksum.txt``) written and the folder renamed to
``raw_data``, so the checksum pipeline finds a complete session or none. An existing ``raw_data`` is
never touched: identical means "already uploaded", different is refused, naming the first difference.
"""

from __future__ import annotations

import shlex
import tarfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol

import xxhash

from sl_pipelines.adapters import upload_remote
from sl_pipelines.adapters.transfer import SMALL_FILE_BYTES, check_stream
from sl_pipelines.adapters.upload_remote import RemoteState, UploadPaths
from sl_pipelines.core.layout import SessionPaths
from sl_pipelines.core.upload_plan import (
    FileFacts,
    UploadPlan,
    compare_sessions,
    describe_difference,
    is_identical,
    plan_upload,
    prefix_candidates,
)
from sl_pipelines.errors import ConfigurationError, SessionExistsError, TransferError, VerificationError
from sl_pipelines.workers.checksum import CHECKSUM_FILE, checksum_text, read_stored_checksum
from sl_pipelines.workers.tree_digest import TreeHasher, list_tree, new_buffer

if TYPE_CHECKING:
    from sl_pipelines.adapters.ssh import SSHTransport

#: The server hashes what arrived (and records it in the manifest) after about this many bytes.
VERIFY_BATCH_BYTES = 256 * 1024 * 1024


class UploadProgress(Protocol):
    """Where an upload reports its progress (the CLI draws a bar; the library needs none)."""

    def stage(self, description: str, total: int, completed: int = 0) -> None:
        """A new stage begins (``hashing``, ``uploading``): ``total`` bytes, ``completed`` done already."""

    def advance(self, amount: int) -> None:
        """``amount`` more bytes of the current stage are done."""


@dataclass(frozen=True)
class UploadReport:
    """What an upload did.

    Attributes:
        source: the local raw-data folder.
        destination: ``raw_data`` on the server.
        files: data files in the session (the checksum file not counted).
        size_bytes: their total size.
        sent_bytes: file content sent by this run (less than ``size_bytes`` when resumed).
        checksum: the tree checksum stored in ``ax_checksum.txt``.
        seconds: wall time, hashing included.
        already_uploaded: the server held an identical session; nothing was sent.
    """

    source: Path
    destination: PurePosixPath
    files: int
    size_bytes: int
    sent_bytes: int
    checksum: str
    seconds: float
    already_uploaded: bool = False


@dataclass(frozen=True)
class LocalSession:
    """The local raw data: files (size + digest), folders and the tree checksum."""

    root: Path
    files: dict[str, FileFacts]
    dirs: tuple[str, ...]
    checksum: str

    @property
    def size_bytes(self) -> int:
        """The total size of the data files."""
        return sum(facts.size for facts in self.files.values())


class _Quiet:
    def stage(self, description: str, total: int, completed: int = 0) -> None:
        """Reports nothing."""

    def advance(self, amount: int) -> None:
        """Reports nothing."""


def push_session(
    transport: SSHTransport, source: Path, target: SessionPaths, *, progress: UploadProgress | None = None
) -> UploadReport:
    """Uploads the raw data in ``source`` to ``target.raw_data``; see the module's description.

    Raises:
        SessionExistsError: the server holds different raw data for this session (nothing is changed).
        VerificationError: the local data does not match its own checksum file, or a file arrived
            different twice.
        TransferError: the local folder cannot be read or uploaded, or a server-side step failed.
    """
    started = time.monotonic()
    check_names(target)
    shown = progress or _Quiet()
    local = scan_local(source, shown)
    paths = UploadPaths.beside(target.raw_data)
    state = upload_remote.inspect(transport, paths, local.size_bytes)
    if state.final is not None:
        _accept_existing(transport, local, target, state, paths)
        return UploadReport(
            source, target.raw_data, len(local.files), local.size_bytes, 0, local.checksum,
            time.monotonic() - started, already_uploaded=True,
        )  # fmt: skip
    prefixes = {
        path: _prefix_digest(source / path, size)
        for path, size in prefix_candidates(local.files, state.manifest, state.partial).items()
    }
    plan = plan_upload(local.files, state.manifest, state.partial, prefixes)
    sent = _Sender(transport, local, paths, shown).run(plan)
    upload_remote.finalize(
        transport, paths, local.files, local.dirs, (CHECKSUM_FILE, checksum_text(local.checksum))
    )
    return UploadReport(
        source, target.raw_data, len(local.files), local.size_bytes, sent, local.checksum,
        time.monotonic() - started,
    )  # fmt: skip


def check_names(target: SessionPaths) -> None:
    """Refuses a project, animal or session name that is not one plain folder name.

    Raises:
        ConfigurationError: the name is empty, has a '/', starts with '.', or holds a control character.
    """
    for key, value in (("project", target.project), ("animal", target.animal), ("session", target.session)):
        if not value or "/" in value or value.startswith(".") or not value.isprintable():
            raise ConfigurationError(
                f"{value!r} is not a usable {key} name; use one folder name without '/', not starting "
                "with '.'.",
                key=key,
            )


def scan_local(source: Path, progress: UploadProgress) -> LocalSession:
    """Lists and hashes the local raw data; a checksum file it holds must match.

    Raises:
        TransferError: not a folder, no files, an entry that is not a file or folder, unreadable.
        VerificationError: the folder's ``ax_checksum.txt`` does not match its data.
    """
    try:
        if not source.is_dir():
            raise TransferError(f"{source} is not a folder on this computer; give the session's folder.")
        listing = list_tree(source)
        data = [path for path in listing.files if path != CHECKSUM_FILE]
        if listing.others:
            raise TransferError(
                f"{source / listing.others[0]} is neither a file nor a folder (a link to a folder, a pipe "
                "or a device), so it cannot be uploaded as raw data; move it out of the session folder.",
                path=source / listing.others[0],
            )
        if not data:
            raise TransferError(f"{source} holds no files to upload; check the folder.", path=source)
        digest = _hash_files(source, data, progress)
        stored = read_stored_checksum(source) if CHECKSUM_FILE in listing.files else None
    except OSError as exc:
        raise TransferError(
            f"Cannot read {exc.filename or source}: {exc.strerror or exc}; check the folder.", path=source
        ) from exc
    if stored is not None and stored != digest.checksum:
        raise VerificationError(
            f"The local raw data {source} does not match its own {CHECKSUM_FILE} (stored {stored}, "
            f"calculated {digest.checksum}), so nothing was uploaded; find out what changed, or remove "
            "that file if the change was deliberate.",
            path=source / CHECKSUM_FILE,
        )
    files = {path: FileFacts(digest.sizes[path], digest.files[path]) for path in data}
    return LocalSession(source, files, listing.folders, digest.checksum)


@dataclass(frozen=True)
class _Digests:
    checksum: str
    files: Mapping[str, str]
    sizes: Mapping[str, int]


def _hash_files(source: Path, data: list[str], progress: UploadProgress) -> _Digests:
    """Hashes the files (in the tree checksum's order), reporting progress file by file."""
    hasher = TreeHasher(source)
    sizes = {path: (source / path).stat().st_size for path in data}
    progress.stage("hashing", sum(sizes.values()))
    view = new_buffer()
    for path in data:
        hasher.add_file(path, view)
        progress.advance(sizes[path])
    digest = hasher.result()
    return _Digests(digest.checksum, digest.files, sizes)


def _accept_existing(
    transport: SSHTransport,
    local: LocalSession,
    target: SessionPaths,
    state: RemoteState,
    paths: UploadPaths,
) -> None:
    """An identical session is fine (its missing checksum file is written); a different one is refused."""
    existing = dict(state.final or {})
    stored = existing.pop(CHECKSUM_FILE, None)
    expected = checksum_text(local.checksum)
    difference = compare_sessions(local.files, existing)
    problem = "" if is_identical(difference) else describe_difference(difference, local.files, existing)
    if not problem and stored is not None and stored.digest != xxhash.xxh3_128(expected.encode()).hexdigest():
        problem = f"the data is identical but its {CHECKSUM_FILE} holds another checksum"
    if problem:
        name = f"{target.project}/{target.animal}/{target.session}"
        raise SessionExistsError(
            f"Session {name} already exists on {_where(transport)} at {target.raw_data} with different raw "
            f"data: {problem}; nothing was changed, so choose another session name or compare the copies.",
            host=transport.host,
            path=target.raw_data,
        )
    if stored is None:
        transport.write_text_atomic(target.raw_data / CHECKSUM_FILE, expected)
    if state.partial or state.manifest:
        transport.remove(paths.partial)
        transport.remove(paths.manifest)


def _where(transport: SSHTransport) -> str:
    """The server as the user knows it: the profile's name (and the host), or the host."""
    label = transport.settings.label
    return f"{label} ({transport.host})" if label and label != transport.host else transport.host


def _prefix_digest(path: Path, length: int) -> str:
    """The XXH3-128 hex digest of the first ``length`` bytes of a local file."""
    digest = xxhash.xxh3_128()
    with path.open("rb") as handle:
        while length > 0 and (block := handle.read(min(length, 4 << 20))):
            digest.update(block)
            length -= len(block)
    return str(digest.hexdigest())


class _Sender:
    """Sends the files of a plan and has the server verify them in batches; counts the bytes sent."""

    def __init__(
        self, transport: SSHTransport, local: LocalSession, paths: UploadPaths, progress: UploadProgress
    ) -> None:
        self.transport, self.local, self.paths, self.progress = transport, local, paths, progress
        self.sent = 0
        self._pending: dict[str, FileFacts] = {}
        self._pending_bytes = 0

    def run(self, plan: UploadPlan) -> int:
        """Sends everything the plan says, verified; returns the bytes of file content sent."""
        files = self.local.files
        todo = {path: 0 for path in plan.send} | dict(plan.resume)
        small = sorted(path for path in todo if files[path].size < SMALL_FILE_BYTES)
        todo |= dict.fromkeys(small, 0)  # the tar stream sends small files whole
        big = sorted(set(todo).difference(small))
        done = self.local.size_bytes - sum(files[path].size - offset for path, offset in todo.items())
        self.progress.stage("uploading", self.local.size_bytes, done)
        self._queue(plan.unconfirmed)
        self._send_small(small)
        for path in big:
            self._send_big(path, todo[path])
        self._verify()
        return self.sent

    def _send_small(self, names: list[str]) -> None:
        """Sends the folders and the small files in one tar stream (folders first, for SFTP's sake)."""
        quoted = shlex.quote(str(self.paths.partial))
        stream = self.transport.open_stream(
            f"mkdir -p -- {quoted} && tar -x --no-same-owner -C {quoted} -f -"
        )
        root = self.local.root
        with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT, bufsize=1 << 20) as archive:  # type: ignore[call-overload]
            for name in self.local.dirs:
                archive.add(root / name, arcname=name, recursive=False)
            for name in names:
                archive.add(root / name, arcname=name, recursive=False)
                self.progress.advance(self.local.files[name].size)
        check_stream(self.transport, stream.finish(), self.paths.partial)
        size = sum(self.local.files[name].size for name in names)
        self.sent += size
        self.transport.count_bytes(size)
        self._queue(names)

    def _send_big(self, name: str, offset: int) -> None:
        self.transport.put_file(
            self.local.root / name, self.paths.partial / name, offset=offset, progress=self.progress.advance
        )
        self.sent += self.local.files[name].size - offset
        self._queue([name])

    def _queue(self, names: Iterable[str]) -> None:
        for name in names:
            self._pending[name] = self.local.files[name]
            self._pending_bytes += self.local.files[name].size
        if self._pending_bytes >= VERIFY_BATCH_BYTES:
            self._verify()

    def _verify(self) -> None:
        """Has the server hash the pending files; a file that arrived different is sent once more."""
        pending, self._pending, self._pending_bytes = self._pending, {}, 0
        if not pending:
            return
        found = upload_remote.verify(self.transport, self.paths, pending)
        wrong = {name: facts for name, facts in pending.items() if found.get(name) != facts}
        for name, facts in wrong.items():  # SFTP sends single files of any size
            self.transport.put_file(self.local.root / name, self.paths.partial / name)
            self.sent += facts.size
        found = upload_remote.verify(self.transport, self.paths, wrong) if wrong else {}
        for name, facts in wrong.items():
            if found.get(name) != facts:
                remote = self.paths.partial / name
                raise VerificationError(
                    f"The copy of {self.local.root / name} at {_where(self.transport)}:{remote} arrived "
                    "different twice; check the server's storage (and this computer's disk), then run the "
                    "upload again.",
                    path=remote,
                )
