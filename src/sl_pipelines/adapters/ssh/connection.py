"""One persistent SSH connection with one SFTP client, opened lazily and re-established with backoff.

Every paramiko and socket error is translated here, once, into the :mod:`sl_pipelines.errors` tree.
The connection dials directly or through a ProxyJump chain, authenticates with the key file, the agent
and the password in that order, and keeps itself alive. A dropped connection is re-established with
backoff before an idempotent operation is retried; a non-idempotent one is never retried.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Self, TypeVar

import paramiko

from sl_pipelines.adapters.ssh.deadlines import request_within
from sl_pipelines.adapters.ssh.hostkeys import (
    UnknownHost,
    host_key_mismatch_error,
    load_known_hosts,
    unknown_host_error,
)
from sl_pipelines.adapters.ssh.settings import Endpoint, SSHSettings, resolve_endpoint
from sl_pipelines.adapters.ssh.tuning import (
    KEEPALIVE_SECONDS,
    MAX_PACKET_SIZE,
    REKEY_AFTER_BYTES,
    WINDOW_SIZE,
    fast_transport,
    raise_rekey_limits,
)
from sl_pipelines.errors import (
    AuthenticationFailedError,
    HostUnreachableError,
    ServerError,
    SlPipelinesError,
    TransferError,
)

_log = logging.getLogger("sl_pipelines")
_T = TypeVar("_T")
_TCPI_BYTES_ACKED = 120
"""Offset of ``tcpi_bytes_acked`` (u64) in Linux's ``struct tcp_info`` (since Linux 4.1)."""
_Socket = socket.socket | paramiko.Channel


class ConnectionLost(Exception):
    """The connection was gone during an operation (internal: :meth:`SSHConnection.call` handles it)."""


class CommandTimeout(Exception):
    """A remote command outlived its deadline (internal: translated into RemoteTimeoutError)."""


class SSHConnection:
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

    @property
    def wire_bytes_sent(self) -> int | None:
        """Bytes of this connection the server has acknowledged, SSH framing and encryption included.

        Read from the TCP socket (Linux ``TCP_INFO``), so it measures what really crossed the network;
        None where that is unknown (not Linux, not connected, a connection through a ProxyJump channel).
        It starts again from zero on a new connection.
        """
        transport = self._client.get_transport() if self._client else None
        sock = getattr(transport, "sock", None)
        if not isinstance(sock, socket.socket) or not hasattr(socket, "TCP_INFO"):
            return None
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        except OSError:
            return None
        if len(info) < _TCPI_BYTES_ACKED + 8:
            return None
        return int(struct.unpack_from("=Q", info, _TCPI_BYTES_ACKED)[0])

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

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _open_client(
        self, endpoint: Endpoint, password: str | None, use_agent: bool, sock: _Socket | None = None
    ) -> paramiko.SSHClient:
        if sock is None:
            sock = self._open_socket(endpoint)
        client = paramiko.SSHClient()
        load_known_hosts(client, self.settings)
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
                transport_factory=fast_transport,
            )
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(KEEPALIVE_SECONDS)
        raise_rekey_limits(transport)
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

    def _open_socket(self, endpoint: Endpoint) -> _Socket:
        """A socket to ``endpoint``: a direct TCP connection, or a channel through the ProxyJump chain."""
        return self._open_jump_channel(endpoint) if endpoint.proxy_jump else self._tcp(endpoint)

    @contextlib.contextmanager
    def _connect_errors(self, endpoint: Endpoint) -> Iterator[None]:
        where = f"{endpoint.user}@{endpoint.hostname}:{endpoint.port}"
        try:
            yield
        except UnknownHost as exc:
            raise unknown_host_error(exc, self.settings) from exc
        except paramiko.BadHostKeyException as exc:
            raise host_key_mismatch_error(exc, self.host) from exc
        except paramiko.AuthenticationException as exc:
            detail = str(exc).rstrip(".")
            raise AuthenticationFailedError(
                f"{where} refused every credential (key file, agent, password): {detail}; "
                "check the user name, the key file and the password of the profile.",
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

        A failure with the connection gone becomes the internal :class:`ConnectionLost`, which
        :meth:`call` turns into a retry (idempotent operations) or a HostUnreachableError.
        """
        try:
            yield
        except (SlPipelinesError, TimeoutError, CommandTimeout):
            raise  # already ours (some are OSErrors: HostUnreachableError), or a timeout for the caller
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if not self._still_connected(exc):
                raise ConnectionLost(what) from exc
            if isinstance(exc, OSError) and not isinstance(exc, paramiko.SSHException):
                raise TransferError(f"Could not {what} on {self.host}: {exc}.", host=self.host) from exc
            raise ServerError(
                f"SSH error while trying to {what} on {self.host}: {exc}.", host=self.host
            ) from exc

    def _still_connected(self, error: BaseException) -> bool:
        """False when ``error`` came from a connection that is gone.

        paramiko's reader thread may notice a dead connection a moment after the caller's read or write
        failed; so unless the error is an answer of the server (an SFTP status with an errno), wait up
        to half a second for it to tell.
        """
        if isinstance(error, OSError) and error.errno is not None and not isinstance(error, ConnectionError):
            return self.connected
        deadline = time.monotonic() + 0.5
        while self.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.connected

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
        except ConnectionLost as exc:
            if not idempotent:
                raise HostUnreachableError(
                    f"The connection to {self.host} dropped during '{what}', which was not retried because "
                    "it may already have run; check its effect on the server before repeating it.",
                    host=self.host,
                ) from exc
            _log.warning("Connection to %s dropped during %s; reconnecting", self.host, what)
        self._reconnect()
        try:
            with self.translated(what):
                return operation()
        except ConnectionLost as exc:
            raise HostUnreachableError(
                f"The connection to {self.host} dropped twice during '{what}'; check the network and the "
                "server, then repeat it.",
                host=self.host,
            ) from exc

    def _ensure_connected(self) -> None:
        if self._client is not None and not self.connected:
            self._reconnect()
        elif self._client is None:
            self.connect()
        elif self._bytes_since_rekey > REKEY_AFTER_BYTES:
            try:
                self._rekey()
            except ConnectionLost:
                self._reconnect()

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
        """Renegotiates keys while idle (see :mod:`sl_pipelines.adapters.ssh.tuning`)."""
        transport = self._client.get_transport() if self._client else None
        if transport is not None:
            with self.translated("renegotiate keys"):
                transport.renegotiate_keys()
        self._bytes_since_rekey = 0

    def _transport(self) -> paramiko.Transport:
        transport = self._client.get_transport() if self._client else None
        if transport is None or not transport.is_active():
            raise ConnectionLost("the connection is closed")
        return transport

    def open_channel(self, timeout: float | None = None) -> paramiko.Channel:
        """A new session channel with the large window of this connection.

        Opening it, and every read and write on it, gives up with :class:`TimeoutError` after ``timeout``
        seconds (default: the settings' ``command_timeout``) without progress.
        """
        limit = self.settings.command_timeout if timeout is None else timeout
        transport = self._transport()
        try:
            channel = transport.open_session(
                window_size=WINDOW_SIZE, max_packet_size=MAX_PACKET_SIZE, timeout=limit
            )
        except paramiko.ChannelException:
            raise
        except paramiko.SSHException as exc:
            if transport.is_active() and str(exc).startswith("Timeout"):
                raise TimeoutError(f"no channel within {limit:g} s") from exc
            raise
        channel.settimeout(limit)
        return channel

    def sftp(self) -> paramiko.SFTPClient:
        """The one SFTP client (opened on first use, with the large window of this transport).

        Every request gives up after ``command_timeout`` seconds without an answer (:class:`TimeoutError`);
        the client is then dropped (:meth:`drop_sftp`) and the next operation opens a new one.
        """
        if self._sftp is None or self._sftp.sock.closed:
            channel = self.open_channel()
            request_within(channel, lambda: channel.invoke_subsystem("sftp"), self.settings.command_timeout)
            self._sftp = paramiko.SFTPClient(channel)
        return self._sftp

    def drop_sftp(self) -> None:
        """Closes the SFTP client after a request went unanswered: its replies may still arrive later."""
        if self._sftp is not None:
            with contextlib.suppress(Exception):  # best effort: the channel may already be gone
                self._sftp.close()
        self._sftp = None

    def count_bytes(self, amount: int) -> None:
        """Records transferred bytes so that keys are renegotiated between operations."""
        self._bytes_since_rekey += amount


def fetch_host_key(settings: SSHSettings) -> tuple[str, paramiko.PKey]:
    """Connects without authenticating and returns the known_hosts name and the server's host key."""
    endpoint = resolve_endpoint(settings)
    probe = SSHConnection(settings)
    transport = fast_transport(probe._open_socket(endpoint))
    try:
        with probe._connect_errors(endpoint):
            transport.start_client(timeout=settings.connect_timeout)
            return endpoint.known_hosts_name, transport.get_remote_server_key()
    finally:
        transport.close()
        probe.close()
