"""Files on the server through the one SFTP client: single files, folders, small texts.

Single files go over SFTP with pipelined writes and prefetched reads (folder trees are
:mod:`sl_pipelines.adapters.transfer`'s). Every OS or SFTP failure becomes a
:class:`~sl_pipelines.errors.TransferError` that names the path.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import stat as stat_module
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO, TypeVar

import paramiko

from sl_pipelines.adapters import transfer
from sl_pipelines.adapters.ssh.commands import RemoteCommands
from sl_pipelines.adapters.ssh.tuning import PREFETCH_REQUESTS, SFTP_REQUEST_SIZE
from sl_pipelines.errors import RemoteTimeoutError, ServerError, TransferError

_T = TypeVar("_T")


class RemoteFiles(RemoteCommands):
    """The connection and its commands plus file operations over the one SFTP client."""

    def put_file(
        self,
        local: Path,
        remote: PurePosixPath,
        *,
        preserve_mtime: bool = True,
        offset: int = 0,
        progress: Callable[[int], object] | None = None,
    ) -> int:
        """Uploads one file through the SFTP client (pipelined); returns its size.

        With ``offset`` the remote file keeps its first ``offset`` bytes and only the rest is sent (an
        interrupted upload completed); ``progress`` is called with the size of each block sent.
        """
        local = Path(local)

        def upload() -> int:
            info = local.stat()
            sftp = self.sftp()
            with local.open("rb") as source, sftp.open(str(remote), "r+b" if offset else "wb") as target:
                target.MAX_REQUEST_SIZE = SFTP_REQUEST_SIZE
                target.set_pipelined(True)
                if offset:
                    source.seek(offset)
                    target.seek(offset)
                _copy(source, target, progress)
            if preserve_mtime:
                sftp.utime(str(remote), (info.st_atime, info.st_mtime))
            self.count_bytes(info.st_size - offset)
            return info.st_size

        return self._file_call(f"upload {local} to {remote}", upload, remote)

    def get_file(self, remote: PurePosixPath, local: Path, *, preserve_mtime: bool = True) -> int:
        """Downloads one file (prefetched, written to a temporary name then renamed); returns its size."""
        local = Path(local)

        def download() -> int:
            partial = local.with_name(f".{local.name}.part")
            with self.sftp().open(str(remote), "rb") as source:
                source.MAX_REQUEST_SIZE = SFTP_REQUEST_SIZE
                attributes = source.stat()
                size = attributes.st_size or 0
                _quiet_prefetch(source).prefetch(size, PREFETCH_REQUESTS)
                with partial.open("wb") as target:
                    _copy(source, target)
            if preserve_mtime and attributes.st_mtime is not None:
                os.utime(partial, (attributes.st_atime or attributes.st_mtime, attributes.st_mtime))
            os.replace(partial, local)
            self.count_bytes(size)
            return size

        return self._file_call(f"download {remote} to {local}", download, remote)

    def _file_call(self, what: str, operation: Callable[[], _T], path: PurePosixPath | Path) -> _T:
        try:
            return self.call(what, operation)
        except TimeoutError as exc:
            self.drop_sftp()
            limit = self.settings.command_timeout
            raise RemoteTimeoutError(
                f"Could not {what} on {self.host}: the server did not answer for {limit:g} s; check its load "
                "and the network, then repeat it.",
                host=self.host,
                command=what,
                timeout=limit,
            ) from exc
        except ServerError as exc:
            # Connection, authentication and host-key errors keep their own type and sentence.
            if type(exc) is not ServerError:
                raise
            raise TransferError(f"Could not {what}: {exc}", host=self.host, path=path) from exc
        except OSError as exc:
            raise TransferError(
                f"Could not {what} on {self.host}: {exc.strerror or exc}; check the path and permissions.",
                host=self.host,
                path=path,
            ) from exc

    def exists(self, path: PurePosixPath) -> bool:
        """True when the path exists on the server."""

        def stat() -> bool:
            try:
                self.sftp().stat(str(path))
            except FileNotFoundError:
                return False
            return True

        return self._file_call(f"check {path}", stat, path)

    def make_folders(self, path: PurePosixPath) -> None:
        """Creates a folder and its missing parents through the SFTP client (one request per new folder)."""

        def make() -> None:
            _sftp_makedirs(self.sftp(), path)

        self._file_call(f"create folder {path}", make, path)

    def mkdir(self, path: PurePosixPath) -> None:
        """Creates a folder and its parents (no error when it exists)."""
        self.run_checked(f"mkdir -p -- {shlex.quote(str(path))}")

    def remove(self, path: PurePosixPath) -> None:
        """Removes a file or a whole tree; a missing path is not an error."""
        transfer.check_removable(path)
        self.run_checked(f"rm -rf -- {shlex.quote(str(path))}")

    def write_text_atomic(self, path: PurePosixPath, text: str) -> None:
        """Writes a text file through a temporary name and an atomic rename."""
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")

        def write() -> None:
            sftp = self.sftp()
            try:
                with sftp.open(str(temporary), "wb") as handle:
                    handle.write(text.encode())
                sftp.posix_rename(str(temporary), str(path))
            except Exception:
                with contextlib.suppress(OSError):
                    sftp.remove(str(temporary))
                raise

        self._file_call(f"write {path}", write, path)

    def read_text(self, path: PurePosixPath, *, tail_bytes: int | None = None) -> str | None:
        """Returns a file's text (or its last ``tail_bytes`` bytes), or None when it does not exist."""

        def read() -> str | None:
            try:
                with self.sftp().open(str(path), "rb") as handle:
                    if tail_bytes is not None:
                        size = handle.stat().st_size or 0
                        handle.seek(max(0, size - tail_bytes))
                    _quiet_prefetch(handle).prefetch()
                    return bytes(handle.read()).decode(errors="replace")
            except FileNotFoundError:
                return None

        return self._file_call(f"read {path}", read, path)

    def list_dir(self, path: PurePosixPath) -> tuple[str, ...]:
        """Names in a folder, sorted (empty when the folder does not exist)."""

        def listing() -> tuple[str, ...]:
            try:
                return tuple(sorted(self.sftp().listdir(str(path))))
            except FileNotFoundError:
                return ()

        return self._file_call(f"list {path}", listing, path)


def _quiet_prefetch(handle: paramiko.SFTPFile) -> paramiko.SFTPFile:
    """Keeps paramiko's prefetch thread from dying with a traceback on stderr when the connection drops.

    The thread only sends read requests; the reading thread meets the same failure (a dropped
    connection, or no answer within the channel's timeout) and reports it as an error of this package.
    """
    send_requests = handle._prefetch_thread  # type: ignore[attr-defined]

    def quietly(*arguments: object) -> None:
        with contextlib.suppress(EOFError, OSError, paramiko.SSHException):
            send_requests(*arguments)

    handle._prefetch_thread = quietly  # type: ignore[attr-defined]
    return handle


def _sftp_makedirs(sftp: paramiko.SFTPClient, path: PurePosixPath) -> None:
    try:
        sftp.mkdir(str(path))
    except FileNotFoundError:
        if path.parent == path:
            raise
        _sftp_makedirs(sftp, path.parent)
        sftp.mkdir(str(path))
    except OSError:
        if not stat_module.S_ISDIR(sftp.stat(str(path)).st_mode or 0):
            raise


def _copy(
    source: IO[bytes] | paramiko.SFTPFile,
    target: IO[bytes] | paramiko.SFTPFile,
    progress: Callable[[int], object] | None = None,
) -> None:
    while True:
        block = source.read(1 << 20)
        if not block:
            return
        target.write(block)
        if progress is not None:
            progress(len(block))
