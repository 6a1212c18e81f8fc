"""The SSH/SFTP transport: one persistent paramiko connection and one SFTP client, opened lazily.

This is the only module that imports paramiko; every paramiko and socket error is translated here,
once, into the :mod:`sl_pipelines.errors` tree. Host keys are checked against the system files, the
user's ``~/.ssh/known_hosts`` and the profile's own file: an unknown host is refused unless the profile
trusts unknown hosts, and a changed key is always refused. ``~/.ssh/config`` is honoured (HostName,
User, Port, IdentityFile, ProxyJump). A dropped connection is re-established with backoff before an
idempotent operation is retried; a non-idempotent one is never retried.

Throughput notes (measured on loopback, see ``scripts/bench_server.py``): TCP_NODELAY cuts back-to-back
exec latency from ~48 ms to ~4 ms; SFTP requests of 128 KiB instead of paramiko's 32 KiB, a 16 MiB
window and AES-GCM first roughly triple big-file throughput. Paramiko rekeys after 512 MiB and can
deadlock when the server closes a channel during that rekey, so the transport rekeys itself between
operations instead (after ``REKEY_AFTER_BYTES``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import secrets
import select
import shlex
import socket
import stat as stat_module
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import IO, Any, TypeVar

import paramiko

from sl_pipelines.adapters import transfer
from sl_pipelines.core.seams import CommandResult
from sl_pipelines.errors import (
    AuthenticationFailedError,
    HostKeyMismatchError,
    HostUnreachableError,
    RemoteCommandError,
    RemoteTimeoutError,
    ServerError,
    TransferError,
    UnknownHostKeyError,
)

_log = logging.getLogger("sl_pipelines")
_T = TypeVar("_T")

WINDOW_SIZE = 16 * 1024 * 1024
MAX_PACKET_SIZE = 32 * 1024
SFTP_REQUEST_SIZE = 128 * 1024  # OpenSSH's sftp-server accepts up to 255 KiB per read/write
PREFETCH_REQUESTS = 64
REKEY_AFTER_BYTES = 1024**3
KEEPALIVE_SECONDS = 30
SYSTEM_KNOWN_HOSTS = (Path("/etc/ssh/ssh_known_hosts"), Path("~/.ssh/known_hosts"))
_FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
_Socket = socket.socket | paramiko.Channel


@dataclass(frozen=True)
class SSHSettings:
    """How to reach a server; usually built from a profile with :meth:`from_profile`.

    Attributes:
        host: host name or ``~/.ssh/config`` alias.
        port, user, key_file: override ``~/.ssh/config`` when given.
        use_agent: try ssh-agent keys (after the key file, before the password).
        password: last resort; never shown.
        known_hosts: the profile's known_hosts file (read with the system files; new keys go here).
        trust_unknown_hosts: accept and record an unknown host key instead of refusing it.
        connect_timeout: seconds for TCP connect, banner and authentication.
        command_timeout: default seconds a remote command may take.
        ssh_config: the OpenSSH client configuration to honour (None: ignore it).
        system_known_hosts: the system/user known_hosts files to read.
        remote_python: the Python used on the server to list and hash trees.
    """

    host: str
    port: int | None = None
    user: str | None = None
    key_file: Path | None = None
    use_agent: bool = True
    password: str | None = field(default=None, repr=False)
    known_hosts: Path | None = None
    trust_unknown_hosts: bool = False
    connect_timeout: float = 10.0
    command_timeout: float = 60.0
    ssh_config: Path | None = Path("~/.ssh/config")
    system_known_hosts: tuple[Path, ...] = SYSTEM_KNOWN_HOSTS
    remote_python: str = "python3"


@dataclass(frozen=True)
class Endpoint:
    """Where a connection really goes, after ``~/.ssh/config`` was applied."""

    hostname: str
    port: int
    user: str
    key_files: tuple[Path, ...]
    proxy_jump: str | None

    @property
    def known_hosts_name(self) -> str:
        """The name under which known_hosts records this host (``[host]:port`` unless port 22)."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


def resolve_endpoint(settings: SSHSettings, host: str | None = None) -> Endpoint:
    """Applies ``~/.ssh/config`` to a host; explicit settings win over the file."""
    host = host or settings.host
    looked_up: dict[str, object] = {}
    config_path = settings.ssh_config.expanduser() if settings.ssh_config else None
    if config_path is not None and config_path.is_file():
        looked_up = dict(paramiko.SSHConfig.from_path(str(config_path)).lookup(host))
    explicit = host == settings.host
    port = settings.port if explicit and settings.port else int(str(looked_up.get("port", 22)))
    user = (settings.user if explicit else None) or str(looked_up.get("user") or _local_user())
    files = [settings.key_file] if explicit and settings.key_file else []
    identity = looked_up.get("identityfile")
    files += [Path(item).expanduser() for item in (identity if isinstance(identity, list) else [])]
    jump = looked_up.get("proxyjump")
    return Endpoint(
        hostname=str(looked_up.get("hostname", host)),
        port=port,
        user=user,
        key_files=tuple(files),
        proxy_jump=str(jump) if jump and str(jump).lower() != "none" else None,
    )


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint of a host key (``SHA256:...``)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _local_user() -> str:
    import getpass  # noqa: PLC0415 - only needed when neither the profile nor ssh config names a user

    return getpass.getuser()


class _UnknownHost(Exception):
    def __init__(self, name: str, key: paramiko.PKey) -> None:
        super().__init__(name)
        self.name = name
        self.key = key


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Refuses unknown hosts, or records them in the profile's file when the profile trusts them."""

    def __init__(self, settings: SSHSettings) -> None:
        self._settings = settings

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if not self._settings.trust_unknown_hosts or self._settings.known_hosts is None:
            raise _UnknownHost(hostname, key)
        record_host_key(self._settings.known_hosts, hostname, key)
        _log.warning(
            "Recorded the unknown host key %s of %s (profile trusts unknown hosts)",
            fingerprint(key),
            hostname,
        )


def record_host_key(known_hosts: Path, name: str, key: paramiko.PKey) -> None:
    """Appends ``key`` for ``name`` to a known_hosts file (created with mode 0600)."""
    path = known_hosts.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(descriptor, "a", encoding="utf-8") as handle:
        handle.write(f"{name} {key.get_name()} {key.get_base64()}\n")


class _ConnectionLost(Exception):
    pass


class _CommandTimeout(Exception):
    pass


class RemoteStream:
    """A remote command whose stdin and stdout are streamed (used for tar transfers).

    Obtained from :meth:`SSHTransport.open_stream`; errors are translated like every transport call.
    """

    def __init__(self, transport: SSHTransport, channel: paramiko.Channel, command: str) -> None:
        self._transport = transport
        self._channel = channel
        self.command = command

    def write(self, data: bytes) -> int:
        """Sends bytes to the command's stdin."""
        with self._transport.translated(f"stream to {self.command!r}"):
            self._channel.sendall(data)
        return len(data)

    def read(self, size: int = -1) -> bytes:
        """Reads up to ``size`` bytes of stdout (fewer only at the end)."""
        chunks = bytearray()
        with self._transport.translated(f"stream from {self.command!r}"):
            while size < 0 or len(chunks) < size:
                data = self._channel.recv(1 << 20 if size < 0 else min(size - len(chunks), 1 << 20))
                if not data:
                    break
                chunks += data
        return bytes(chunks)

    def close_input(self) -> None:
        """Signals the end of stdin to the command."""
        with self._transport.translated(f"stream to {self.command!r}"):
            self._channel.shutdown_write()

    def finish(self) -> CommandResult:
        """Closes stdin, reads what is left and returns the command's result."""
        with self._transport.translated(f"finish {self.command!r}"):
            self._channel.shutdown_write()
            rest = self.read()
            stderr = self._channel.makefile_stderr("rb").read()
            code = self._channel.recv_exit_status()
            self._channel.close()
        return CommandResult(
            self.command, code, rest.decode(errors="replace"), stderr.decode(errors="replace")
        )


class SSHTransport:
    """One persistent SSH connection with one SFTP client; a context manager.

    Args:
        settings: where and how to connect.
        reconnect_attempts: how often a dropped connection is re-established before giving up.
        reconnect_delay: the first backoff delay in seconds (doubles each attempt).
    """

    def __init__(
        self, settings: SSHSettings, *, reconnect_attempts: int = 5, reconnect_delay: float = 0.2
    ) -> None:
        self.settings = settings
        self.endpoint = resolve_endpoint(settings)
        self.exec_count = 0
        self._attempts = reconnect_attempts
        self._delay = reconnect_delay
        self._client: paramiko.SSHClient | None = None
        self._jumps: list[paramiko.SSHClient] = []
        self._sftp: paramiko.SFTPClient | None = None
        self._bytes_since_rekey = 0

    # ----------------------------------------------------------------------------- connection

    @property
    def host(self) -> str:
        """The host as the user named it."""
        return self.settings.host

    @property
    def connected(self) -> bool:
        """True while the connection is up."""
        transport = self._client.get_transport() if self._client else None
        return bool(transport and transport.is_active())

    def connect(self) -> None:
        """Opens the connection now (it is otherwise opened on first use).

        Raises:
            HostUnreachableError, AuthenticationFailedError, UnknownHostKeyError, HostKeyMismatchError.
        """
        if not self.connected:
            self.close()
            self._client = self._open_client(self.endpoint, self.settings.password, self.settings.use_agent)

    def close(self) -> None:
        """Closes the SFTP client and the connection (and any jump hosts)."""
        for closable in (self._sftp, self._client, *reversed(self._jumps)):
            if closable is not None:
                with contextlib.suppress(Exception):  # best effort: the connection may already be gone
                    closable.close()
        self._sftp, self._client, self._jumps = None, None, []

    def __enter__(self) -> SSHTransport:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _open_client(
        self, endpoint: Endpoint, password: str | None, use_agent: bool, sock: _Socket | None = None
    ) -> paramiko.SSHClient:
        if sock is None:
            sock = self._open_jump_channel(endpoint) if endpoint.proxy_jump else self._tcp(endpoint)
        client = paramiko.SSHClient()
        for path in self.settings.system_known_hosts:
            if path.expanduser().is_file():
                client.load_system_host_keys(str(path.expanduser()))
        if self.settings.known_hosts and self.settings.known_hosts.expanduser().is_file():
            client.load_host_keys(str(self.settings.known_hosts.expanduser()))
        client.set_missing_host_key_policy(_HostKeyPolicy(self.settings))
        key_files = [str(path.expanduser()) for path in endpoint.key_files if path.expanduser().is_file()]
        with self._connect_errors(endpoint):
            client.connect(
                endpoint.hostname,
                port=endpoint.port,
                username=endpoint.user,
                password=password,
                key_filename=key_files or None,  # type: ignore[arg-type]  # paramiko takes a list too
                allow_agent=use_agent,
                look_for_keys=not key_files and not password,
                sock=sock,
                timeout=self.settings.connect_timeout,
                banner_timeout=self.settings.connect_timeout,
                auth_timeout=self.settings.connect_timeout,
                transport_factory=_fast_transport,
            )
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(KEEPALIVE_SECONDS)
        _raise_rekey_limits(transport)
        _log.debug("Connected to %s@%s:%d", endpoint.user, endpoint.hostname, endpoint.port)
        return client

    def _tcp(self, endpoint: Endpoint) -> socket.socket:
        try:
            sock = socket.create_connection(
                (endpoint.hostname, endpoint.port), timeout=self.settings.connect_timeout
            )
        except OSError as exc:
            raise HostUnreachableError(
                f"Cannot reach {endpoint.hostname}:{endpoint.port} ({exc}); check the host name, the port "
                "and that the server is up.",
                host=self.host,
            ) from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _open_jump_channel(self, endpoint: Endpoint) -> paramiko.Channel:
        """Connects through the ProxyJump chain (``[user@]host[:port]``, comma-separated) with keys/agent."""
        hops = [self._hop(text.strip()) for text in (endpoint.proxy_jump or "").split(",") if text.strip()]
        sock: _Socket | None = None
        for position, hop in enumerate(hops):
            client = self._open_client(hop, None, True, sock=sock or self._tcp(hop))
            self._jumps.append(client)
            target = hops[position + 1] if position + 1 < len(hops) else endpoint
            transport = client.get_transport()
            assert transport is not None
            with self._connect_errors(target):
                sock = transport.open_channel(
                    "direct-tcpip", (target.hostname, target.port), ("127.0.0.1", 0)
                )
        assert isinstance(sock, paramiko.Channel)
        return sock

    def _hop(self, text: str) -> Endpoint:
        user, _, rest = text.rpartition("@")
        name, _, port = rest.partition(":")
        found = resolve_endpoint(self.settings, name)
        extra = (self.settings.key_file,) if self.settings.key_file else ()
        return Endpoint(
            found.hostname,
            int(port) if port else found.port,
            user or found.user,
            found.key_files + extra,
            None,
        )

    @contextlib.contextmanager
    def _connect_errors(self, endpoint: Endpoint) -> Iterator[None]:
        where = f"{endpoint.user}@{endpoint.hostname}:{endpoint.port}"
        try:
            yield
        except _UnknownHost as exc:
            raise UnknownHostKeyError(
                f"The host key of {exc.name} ({exc.key.get_name()} {fingerprint(exc.key)}) is not in any "
                "known_hosts file, so the connection was refused; if this fingerprint is right, record it "
                "with 'sl-server profile trust PROFILE' (or ssh-keyscan into the profile's known_hosts).",
                host=self.host,
            ) from exc
        except paramiko.BadHostKeyException as exc:
            raise HostKeyMismatchError(
                f"The host key of {exc.hostname} has CHANGED: known_hosts expects "
                f"{fingerprint(exc.expected_key)} but the server offered {fingerprint(exc.key)}, so the "
                "connection was refused; if the server was reinstalled, remove the old known_hosts entry "
                "and trust the new key, otherwise tell your administrator.",
                host=self.host,
            ) from exc
        except paramiko.AuthenticationException as exc:
            raise AuthenticationFailedError(
                f"{where} refused every credential (key file, agent, password): {exc}; check the user name, "
                "the key file and the password of the profile.",
                host=self.host,
            ) from exc
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise HostUnreachableError(
                f"Cannot open an SSH connection to {where} ({type(exc).__name__}: {exc}); check that sshd "
                "runs there and that the port is right.",
                host=self.host,
            ) from exc

    # ----------------------------------------------------------------------------- calls

    @contextlib.contextmanager
    def translated(self, what: str) -> Iterator[None]:
        """Translates paramiko/socket errors raised while doing ``what``.

        A failure with the connection gone becomes the private ``_ConnectionLost``, which :meth:`call`
        turns into a retry (idempotent operations) or a HostUnreachableError.
        """
        try:
            yield
        except (TimeoutError, _CommandTimeout):
            raise
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if not self.connected:
                raise _ConnectionLost(what) from exc
            if isinstance(exc, OSError) and not isinstance(exc, paramiko.SSHException):
                raise TransferError(f"Could not {what} on {self.host}: {exc}.", host=self.host) from exc
            raise ServerError(
                f"SSH error while trying to {what} on {self.host}: {exc}.", host=self.host
            ) from exc

    def call(self, what: str, operation: Callable[[], _T], *, idempotent: bool = True) -> _T:
        """Runs ``operation`` on a live connection; re-establishes a dropped one with backoff.

        Args:
            what: a short description for messages (``run 'squeue'``).
            operation: the work; it may raise paramiko/socket errors.
            idempotent: retry once after a reconnect when the connection dropped during the call.
        """
        self._ensure_connected()
        try:
            with self.translated(what):
                return operation()
        except _ConnectionLost as exc:
            if not idempotent:
                raise HostUnreachableError(
                    f"The connection to {self.host} dropped during '{what}', which was not retried because "
                    "it may already have run; check its effect on the server before repeating it.",
                    host=self.host,
                ) from exc
            _log.warning("Connection to %s dropped during %s; reconnecting", self.host, what)
        self._reconnect()
        with self.translated(what):
            try:
                return operation()
            except _ConnectionLost as exc:
                raise HostUnreachableError(
                    f"The connection to {self.host} dropped twice during '{what}'; check the network.",
                    host=self.host,
                ) from exc

    def _ensure_connected(self) -> None:
        if self._client is not None and not self.connected:
            self._reconnect()
        elif self._client is None:
            self.connect()
        elif self._bytes_since_rekey > REKEY_AFTER_BYTES:
            self._rekey()

    def _reconnect(self) -> None:
        delay = self._delay
        for attempt in range(1, self._attempts + 1):
            self.close()
            try:
                self.connect()
                return
            except HostUnreachableError:
                if attempt == self._attempts:
                    raise
                _log.info(
                    "Reconnect %d/%d to %s failed; retrying in %.1f s",
                    attempt,
                    self._attempts,
                    self.host,
                    delay,
                )
                time.sleep(delay)
                delay *= 2

    def _rekey(self) -> None:
        """Renegotiates keys while idle (see the module docstring)."""
        transport = self._client.get_transport() if self._client else None
        if transport is not None:
            with self.translated("renegotiate keys"):
                transport.renegotiate_keys()
        self._bytes_since_rekey = 0

    def _transport(self) -> paramiko.Transport:
        transport = self._client.get_transport() if self._client else None
        if transport is None or not transport.is_active():
            raise _ConnectionLost("the connection is closed")
        return transport

    def sftp(self) -> paramiko.SFTPClient:
        """The one SFTP client (opened on first use, with the large window of this transport)."""
        if self._sftp is None or self._sftp.sock.closed:
            channel = self._transport().open_session(window_size=WINDOW_SIZE, max_packet_size=MAX_PACKET_SIZE)
            channel.invoke_subsystem("sftp")
            self._sftp = paramiko.SFTPClient(channel)
        return self._sftp

    def count_bytes(self, amount: int) -> None:
        """Records transferred bytes so that keys are renegotiated between operations."""
        self._bytes_since_rekey += amount

    # ----------------------------------------------------------------------------- commands

    def run(self, command: str, *, timeout: float | None = None, idempotent: bool = True) -> CommandResult:
        """Runs a shell command; returns its exit code and output (a non-zero exit is not an error).

        Raises:
            RemoteTimeoutError: the command did not finish within ``timeout`` (default: the settings').
            HostUnreachableError: the connection dropped and could not be re-established, or dropped
                during a non-idempotent command.
        """
        limit = timeout if timeout is not None else self.settings.command_timeout
        try:
            return self.call(
                f"run {_short(command)}", lambda: self._exec(command, limit), idempotent=idempotent
            )
        except (TimeoutError, _CommandTimeout) as exc:
            raise RemoteTimeoutError(
                f"{_short(command)} did not finish within {limit:g} s on {self.host}; raise the timeout or "
                "check the server's load.",
                host=self.host,
                command=command,
                timeout=limit,
            ) from exc

    def run_checked(
        self, command: str, *, timeout: float | None = None, idempotent: bool = True
    ) -> CommandResult:
        """Like :meth:`run`, but a non-zero exit raises RemoteCommandError."""
        result = self.run(command, timeout=timeout, idempotent=idempotent)
        if not result.ok:
            raise RemoteCommandError(
                f"{_short(command)} exited {result.exit_code} on {self.host}: "
                f"{result.stderr.strip() or 'no message'}.",
                host=self.host,
                command=command,
                exit_code=result.exit_code,
                stdout=result.stdout,
                stderr=result.stderr,
            )
        return result

    def _exec(self, command: str, timeout: float) -> CommandResult:
        deadline = time.monotonic() + timeout
        channel = self._transport().open_session(window_size=WINDOW_SIZE, max_packet_size=MAX_PACKET_SIZE)
        self.exec_count += 1
        try:
            channel.exec_command(command)
            stdout, stderr = _drain(channel, deadline)
            code = channel.recv_exit_status()
            if code == -1 and not self.connected:  # paramiko's "no exit status": the connection died
                raise _ConnectionLost(command)
        finally:
            channel.close()
        return CommandResult(command, code, stdout.decode(errors="replace"), stderr.decode(errors="replace"))

    def open_stream(self, command: str) -> RemoteStream:
        """Starts a command whose stdin/stdout the caller streams (one channel, one exec)."""

        def start() -> RemoteStream:
            channel = self._transport().open_session(window_size=WINDOW_SIZE, max_packet_size=MAX_PACKET_SIZE)
            self.exec_count += 1
            channel.exec_command(command)
            return RemoteStream(self, channel, command)

        return self.call(f"start {_short(command)}", start)

    # ----------------------------------------------------------------------------- files

    def put_file(self, local: Path, remote: PurePosixPath, *, preserve_mtime: bool = True) -> int:
        """Uploads one file through the SFTP client (pipelined); returns its size."""
        local = Path(local)

        def upload() -> int:
            info = local.stat()
            sftp = self.sftp()
            with local.open("rb") as source, sftp.open(str(remote), "wb") as target:
                target.MAX_REQUEST_SIZE = SFTP_REQUEST_SIZE
                target.set_pipelined(True)
                _copy(source, target)
            if preserve_mtime:
                sftp.utime(str(remote), (info.st_atime, info.st_mtime))
            self.count_bytes(info.st_size)
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
                source.prefetch(size, PREFETCH_REQUESTS)
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
        except ServerError as exc:
            if isinstance(exc, TransferError | HostUnreachableError):
                raise
            raise TransferError(f"Could not {what}: {exc}", host=self.host, path=path) from exc
        except OSError as exc:
            raise TransferError(
                f"Could not {what} on {self.host}: {exc.strerror or exc}; check the path and permissions.",
                host=self.host,
                path=path,
            ) from exc

    def put_tree(
        self, local: Path, remote: PurePosixPath, *, verify: transfer.Verify = transfer.Verify.SIZE
    ) -> transfer.TransferReport:
        """Uploads a folder tree (small files in one tar stream, big ones over SFTP), then verifies it."""
        return transfer.put_tree(self, Path(local), remote, verify=verify)

    def get_tree(
        self, remote: PurePosixPath, local: Path, *, verify: transfer.Verify = transfer.Verify.SIZE
    ) -> transfer.TransferReport:
        """Downloads a folder tree (small files in one tar stream, big ones over SFTP), then verifies it."""
        return transfer.get_tree(self, remote, Path(local), verify=verify)

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
                    handle.prefetch()
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


def fetch_host_key(settings: SSHSettings) -> tuple[str, paramiko.PKey]:
    """Connects without authenticating and returns the known_hosts name and the server's host key."""
    endpoint = resolve_endpoint(settings)
    probe = SSHTransport(settings)
    sock = probe._open_jump_channel(endpoint) if endpoint.proxy_jump else probe._tcp(endpoint)
    transport = _fast_transport(sock)
    try:
        with probe._connect_errors(endpoint):
            transport.start_client(timeout=settings.connect_timeout)
            return endpoint.known_hosts_name, transport.get_remote_server_key()
    finally:
        transport.close()
        probe.close()


def _fast_transport(
    sock: Any,
    /,
    *,
    gss_kex: bool = False,
    gss_deleg_creds: bool = True,
    disabled_algorithms: Mapping[str, Iterable[str]] | None = None,
) -> paramiko.Transport:
    """A Transport with a large window and AES-GCM first (GSS-API is not used)."""
    del gss_kex, gss_deleg_creds
    transport = paramiko.Transport(
        sock,
        default_window_size=WINDOW_SIZE,
        default_max_packet_size=MAX_PACKET_SIZE,
        disabled_algorithms=disabled_algorithms,
    )
    options = transport.get_security_options()
    preferred = [name for name in _FAST_CIPHERS if name in options.ciphers]
    options.ciphers = tuple(preferred + [name for name in options.ciphers if name not in preferred])
    return transport


def _raise_rekey_limits(transport: paramiko.Transport) -> None:
    packetizer = transport.packetizer
    for name in ("REKEY_BYTES", "REKEY_PACKETS", "REKEY_BYTES_OVERFLOW_MAX", "REKEY_PACKETS_OVERFLOW_MAX"):
        setattr(packetizer, name, 2**40)


def _drain(channel: paramiko.Channel, deadline: float) -> tuple[bytes, bytes]:
    """Reads stdout and stderr until the command ended, without letting either fill the window."""
    out, err = bytearray(), bytearray()
    while True:
        while channel.recv_ready():
            out += channel.recv(1 << 20)
        while channel.recv_stderr_ready():
            err += channel.recv_stderr(1 << 20)
        finished = channel.closed or (channel.eof_received and channel.exit_status_ready())
        if finished and not channel.recv_ready() and not channel.recv_stderr_ready():
            return bytes(out), bytes(err)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _CommandTimeout
        select.select([channel], [], [], min(remaining, 0.2))


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


def _copy(source: IO[bytes] | paramiko.SFTPFile, target: IO[bytes] | paramiko.SFTPFile) -> None:
    while True:
        block = source.read(1 << 20)
        if not block:
            return
        target.write(block)


def _short(command: str, limit: int = 120) -> str:
    text = " ".join(command.split())
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")
