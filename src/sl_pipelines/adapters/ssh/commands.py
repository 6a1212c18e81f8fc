"""Remote commands over the connection: run one and collect its output, or stream its stdin/stdout."""

from __future__ import annotations

import contextlib
import select
import time
from collections.abc import Iterator

import paramiko

from sl_pipelines.adapters.ssh.connection import CommandTimeout, ConnectionLost, SSHConnection
from sl_pipelines.adapters.ssh.deadlines import exit_status_within, request_within
from sl_pipelines.core.seams import CommandResult
from sl_pipelines.errors import (
    HostUnreachableError,
    RemoteCommandError,
    RemoteTimeoutError,
    SlPipelinesError,
    TransferError,
)


class RemoteStream:
    """A remote command whose stdin and stdout are streamed (used for tar transfers).

    Obtained from :meth:`SSHTransport.open_stream`. Every read and write gives up after the settings'
    ``command_timeout`` seconds without progress (RemoteTimeoutError); a dropped connection is a
    HostUnreachableError (a stream is never retried: the caller repeats the whole transfer).
    """

    def __init__(self, transport: SSHConnection, channel: paramiko.Channel, command: str) -> None:
        self._transport = transport
        self._channel = channel
        self.command = command
        self._pending = b""

    def write(self, data: bytes) -> int:
        """Sends bytes to the command's stdin."""
        with self._guard("stream to"):
            self._channel.sendall(data)
        return len(data)

    def skip_through(self, line: bytes, limit: int = 1 << 20) -> None:
        """Discards stdout up to and including ``line``: what a login shell printed before the command.

        Raises:
            TransferError: the output ended, or went on for ``limit`` bytes, without that line.
        """
        seen = bytearray(self._pending)
        with self._guard("stream from"):
            while (found := seen.find(line)) < 0 and len(seen) < limit:
                data = self._receive(1 << 16)
                if not data:
                    break
                seen += data
        if found < 0:
            said = " ".join(bytes(seen[:200]).decode(errors="replace").split()) or "nothing"
            raise TransferError(
                f"{self.command!r} on {self._transport.host} printed no start line (it printed: {said}); "
                "check that the command runs there.",
                host=self._transport.host,
            )
        self._pending = bytes(seen[found + len(line) :])

    def read(self, size: int = -1) -> bytes:
        """Reads up to ``size`` bytes of stdout (fewer only at the end)."""
        chunks = bytearray(self._pending[: None if size < 0 else size])
        self._pending = self._pending[len(chunks) :]
        with self._guard("stream from"):
            while size < 0 or len(chunks) < size:
                data = self._receive(1 << 20 if size < 0 else min(size - len(chunks), 1 << 20))
                if not data:
                    break
                chunks += data
        return bytes(chunks)

    def close_input(self) -> None:
        """Signals the end of stdin to the command."""
        with self._guard("stream to"):
            self._channel.shutdown_write()

    def finish(self) -> CommandResult:
        """Closes stdin, reads what is left and returns the command's result."""
        with self._guard("finish"):
            self._channel.shutdown_write()
            rest = self.read()
            stderr = self._channel.makefile_stderr("rb").read()
            code = exit_status_within(self._channel, self._transport.settings.command_timeout)
            if code == -1 and not self._transport.connected:
                raise ConnectionLost(self.command)
            self._channel.close()
        return CommandResult(
            self.command, code, rest.decode(errors="replace"), stderr.decode(errors="replace")
        )

    def _receive(self, size: int) -> bytes:
        data = self._channel.recv(size)
        if not data and not self._transport.connected:  # the end of the output, or of the connection?
            raise ConnectionLost(self.command)
        return data

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Translates errors of one stream operation: a stall, a dropped connection, paramiko's own."""
        host, limit = self._transport.host, self._transport.settings.command_timeout
        try:
            with self._transport.translated(f"{what} {_short(self.command)}"):
                yield
        except SlPipelinesError:
            raise  # translated by an inner step already (finish reads the rest)
        except (TimeoutError, CommandTimeout) as exc:
            self._channel.close()
            raise RemoteTimeoutError(
                f"{_short(self.command)} on {host} made no progress for {limit:g} s; check the server's "
                "load and the network, then repeat the transfer.",
                host=host,
                command=self.command,
                timeout=limit,
            ) from exc
        except ConnectionLost as exc:
            raise HostUnreachableError(
                f"The connection to {host} dropped during {_short(self.command)}; the transfer did not "
                "finish, repeat it once the server answers again.",
                host=host,
            ) from exc


class RemoteCommands(SSHConnection):
    """The connection plus shell commands: one channel and one exec per command."""

    def run(
        self,
        command: str,
        *,
        timeout: float | None = None,
        idempotent: bool = True,
        stdin: bytes | None = None,
    ) -> CommandResult:
        """Runs a shell command; returns its exit code and output (a non-zero exit is not an error).

        ``stdin`` is sent to the command's standard input (then closed) while its output is read, so a
        request of any size travels without touching the command line's limits.

        Raises:
            RemoteTimeoutError: the command did not finish within ``timeout`` (default: the settings').
            HostUnreachableError: the connection dropped and could not be re-established, or dropped
                during a non-idempotent command.
        """
        limit = timeout if timeout is not None else self.settings.command_timeout
        try:
            return self.call(
                f"run {_short(command)}", lambda: self._exec(command, limit, stdin), idempotent=idempotent
            )
        except (TimeoutError, CommandTimeout) as exc:
            raise RemoteTimeoutError(
                f"{_short(command)} did not finish within {limit:g} s on {self.host}; raise the timeout or "
                "check the server's load.",
                host=self.host,
                command=command,
                timeout=limit,
            ) from exc

    def run_checked(
        self,
        command: str,
        *,
        timeout: float | None = None,
        idempotent: bool = True,
        stdin: bytes | None = None,
    ) -> CommandResult:
        """Like :meth:`run`, but a non-zero exit raises RemoteCommandError."""
        result = self.run(command, timeout=timeout, idempotent=idempotent, stdin=stdin)
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

    def _exec(self, command: str, timeout: float, stdin: bytes | None = None) -> CommandResult:
        deadline = time.monotonic() + timeout
        channel = self.open_channel(timeout)
        self.exec_count += 1
        try:
            request_within(
                channel, lambda: channel.exec_command(command), max(0.0, deadline - time.monotonic())
            )
            stdout, stderr = _drain(channel, deadline, stdin or b"")
            code = channel.recv_exit_status()
            if code == -1 and not self.connected:  # paramiko's "no exit status": the connection died
                raise ConnectionLost(command)
        finally:
            channel.close()
        return CommandResult(command, code, stdout.decode(errors="replace"), stderr.decode(errors="replace"))

    def open_stream(self, command: str) -> RemoteStream:
        """Starts a command whose stdin/stdout the caller streams (one channel, one exec)."""

        def start() -> RemoteStream:
            channel = self.open_channel()
            self.exec_count += 1
            request_within(channel, lambda: channel.exec_command(command), self.settings.command_timeout)
            return RemoteStream(self, channel, command)

        try:
            return self.call(f"start {_short(command)}", start)
        except TimeoutError as exc:
            raise RemoteTimeoutError(
                f"{_short(command)} did not start within {self.settings.command_timeout:g} s on {self.host}; "
                "check the server's load and the network.",
                host=self.host,
                command=command,
                timeout=self.settings.command_timeout,
            ) from exc


def _drain(channel: paramiko.Channel, deadline: float, stdin: bytes = b"") -> tuple[bytes, bytes]:
    """Sends ``stdin`` and reads stdout and stderr until the command ended, never blocking on one side.

    The input goes out as the channel's window allows while the output is read, so a command that
    answers before it has read all its input cannot deadlock with us.
    """
    out, err = bytearray(), bytearray()
    pending = memoryview(stdin)
    if not pending:
        channel.shutdown_write()
    while True:
        while pending and channel.send_ready():
            try:
                sent = channel.send(bytes(pending[: 1 << 16]))
            except OSError:  # the command exited without reading all of its input: its output says why
                sent = len(pending)
            pending = pending[sent:]
            if not pending:
                channel.shutdown_write()
        while channel.recv_ready():
            out += channel.recv(1 << 20)
        while channel.recv_stderr_ready():
            err += channel.recv_stderr(1 << 20)
        finished = channel.closed or (channel.eof_received and channel.exit_status_ready())
        if finished and not channel.recv_ready() and not channel.recv_stderr_ready():
            return bytes(out), bytes(err)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CommandTimeout
        select.select([channel], [], [], min(remaining, 0.01 if pending else 0.2))


def _short(command: str, limit: int = 120) -> str:
    """A command as one quoted line for messages, cut to ``limit`` characters."""
    text = " ".join(command.split())
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")
