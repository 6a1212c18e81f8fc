"""The Server's file operations over its transport: single files and trees, run records and leases,
sessions (each a single remote command or SFTP operation)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from sl_pipelines.adapters import upload
from sl_pipelines.adapters.profiles import ServerProfile
from sl_pipelines.adapters.ssh import SSHTransport
from sl_pipelines.adapters.transfer import TransferReport, Verify
from sl_pipelines.adapters.upload import UploadProgress, UploadReport
from sl_pipelines.core.file_changes import FileChange, build_changes, build_read, parse_changes, parse_read
from sl_pipelines.core.layout import SessionPaths
from sl_pipelines.core.lease import LeaseOutcome, LeaseRequest, build_take, parse_take
from sl_pipelines.core.selection import SessionTrackers, build_select, parse_select, pattern_parts
from sl_pipelines.core.session_query import FoundSession, build_find, candidates, found_sessions, parse_find
from sl_pipelines.errors import ServerError
from sl_pipelines.vocabulary import TrackerFileNames


class ServerFiles:
    """File operations of :class:`~sl_pipelines.adapters.server.Server` (a mixin over its transport)."""

    profile: ServerProfile
    transport: SSHTransport

    @property
    def name(self) -> str:
        """The profile's name."""
        return self.profile.name

    @property
    def storage_root(self) -> PurePosixPath:
        """The slow, large volume: raw data and trackers."""
        return self.profile.storage_root

    @property
    def working_root(self) -> PurePosixPath:
        """The fast volume: processing output and job folders."""
        return self.profile.working_root

    def push_file(self, local: Path, remote: PurePosixPath) -> int:
        """Uploads one file (mtime preserved); returns its size."""
        return self.transport.put_file(local, remote)

    def pull_file(self, remote: PurePosixPath, local: Path) -> int:
        """Downloads one file (mtime preserved); returns its size."""
        return self.transport.get_file(remote, local)

    def push_tree(
        self, local: Path, remote: PurePosixPath, *, verify: Verify = Verify.SIZE
    ) -> TransferReport:
        """Uploads a folder tree and verifies it (sizes, or xxHash with ``Verify.HASH``)."""
        return self.transport.put_tree(local, remote, verify=verify)

    def pull_tree(
        self, remote: PurePosixPath, local: Path, *, verify: Verify = Verify.SIZE
    ) -> TransferReport:
        """Downloads a folder tree and verifies it (sizes, or xxHash with ``Verify.HASH``)."""
        return self.transport.get_tree(remote, local, verify=verify)

    def push_session(
        self,
        local: Path,
        project: str,
        animal: str,
        session: str,
        *,
        progress: UploadProgress | None = None,
    ) -> UploadReport:
        """Uploads a session's raw data to ``<storage_root>/<project>/<animal>/<session>/raw_data``:
        verified by xxHash, resumable, never over different data (see :mod:`~sl_pipelines.adapters.upload`).
        """
        target = SessionPaths(self.storage_root, self.working_root, project, animal, session)
        return upload.push_session(self.transport, Path(local), target, progress=progress)

    def exists(self, path: PurePosixPath) -> bool:
        """True when the path exists on the server."""
        return self.transport.exists(path)

    def remove(self, path: PurePosixPath) -> None:
        """Removes a file or a whole tree; a missing path is not an error."""
        self.transport.remove(path)

    def mkdir(self, path: PurePosixPath) -> None:
        """Creates a folder with its parents."""
        self.transport.mkdir(path)

    def write_text(self, path: PurePosixPath, text: str) -> None:
        """Writes a text file atomically (temporary name + rename)."""
        self.transport.write_text_atomic(path, text)

    def read_files(self, folder: PurePosixPath, name: str) -> dict[PurePosixPath, str]:
        """The text of every ``<folder>/*/<name>`` (the runs' records): ONE command."""
        return parse_read(self.transport.run(build_read(folder, name)).stdout)

    def change_files(self, changes: Sequence[FileChange]) -> tuple[str, ...]:
        """Writes files atomically and removes paths (run records, job folders): ONE command."""
        if not changes:
            return ()
        command, data = build_changes(changes)
        result = self.transport.run(command, stdin=data)
        return parse_changes(result.stdout, changes)

    def take_leases(self, requests: Sequence[LeaseRequest]) -> tuple[LeaseOutcome, ...]:
        """Takes (or keeps) the leases of runs under ``flock`` on the server: ONE command."""
        if not requests:
            return ()
        command, data = build_take(requests)
        result = self.transport.run(command, idempotent=False, stdin=data)
        return parse_take(result.stdout, len(requests))

    def select_sessions(self, pattern: str) -> tuple[SessionTrackers, ...]:
        """The sessions a pattern names, with their trackers and session data: ONE command."""
        trackers = [name.value for name in TrackerFileNames]
        command, data = build_select(self.storage_root, pattern_parts(pattern), trackers)
        result = self.transport.run(command, stdin=data)
        try:
            return parse_select(result.stdout, self.storage_root, self.working_root)
        except ServerError as exc:
            said = " ".join(result.stderr.split())[-300:] or f"exit status {result.exit_code}"
            raise ServerError(f"{exc} {self.name} said: {said}", host=self.transport.host) from None

    def find_sessions(self, specs: Sequence[str]) -> tuple[FoundSession, ...]:
        """Finds every session (ids, project/animal/session or paths) and reads its session data: ONE command.

        Raises:
            SessionNotFoundError, ConfigurationError: the first spec that names no single session.
        """
        if not specs:
            return ()
        wanted = [candidates(spec, self.storage_root, self.name) for spec in specs]
        command, data = build_find(wanted, self.storage_root)
        result = self.transport.run(command, stdin=data)
        answers = parse_find(result.stdout, len(wanted))
        return found_sessions(wanted, answers, self.storage_root, self.working_root, self.name)

    def read_text(self, path: PurePosixPath, *, tail_bytes: int | None = None) -> str | None:
        """A file's text (or its last ``tail_bytes``), or None when it does not exist."""
        return self.transport.read_text(path, tail_bytes=tail_bytes)

    def list_dir(self, path: PurePosixPath) -> tuple[str, ...]:
        """Names in a folder (empty when it does not exist)."""
        return self.transport.list_dir(path)

    def _make_folder(self, folder: PurePosixPath) -> None:
        """Creates a job folder and missing parents through the SFTP client (no extra exec)."""
        self.transport.make_folders(folder)
