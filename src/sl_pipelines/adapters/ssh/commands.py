"""Remote commands over the connection: run one and collect its output, or stream its stdin/stdout."""

from __future__ import annotations

import select
import time

import paramiko

from sl_pipelines.adapters.ssh.connection import CommandTimeout, ConnectionLost, SSHConnection
from sl_pipelines.core.seams import CommandResult
from sl_pipelines.errors import RemoteCommandError, RemoteTimeoutError, TransferError


class RemoteStream:
    """A remote command whose stdin and stdout are streamed (used for tar transfers).

    Obtained from :meth:`SSHTransport.open_stream`; errors are translated like every transport call.
    """

    def __init__(self, transport: SSHConnection, channel: paramiko.Channel, command: str) -> None:
        self._transport = transport
        self._channel = channel
        self.command = command
        self._pending = b""

    def write(self, data: bytes) -> int:
        """Sends bytes to the command's stdin."""
        with self._transport.translated(f"stream to {self.command!r}"):
            self._channel.sendall(data)
        return len(data)

    def skip_through(self, line: bytes, limit: int = 1 << 20) -> None:
        """Discards stdout up to and including ``line``: what a login shell printed before the command.

        Raises:
            TransferError: the output ended, or went on for ``limit`` bytes, without that line.
        """
        seen = bytearray(self._pending)
        with self._transport.translated(f"stream from {self.command!r}"):
            while (found := seen.find(line)) < 0 and len(seen) < limit:
                data = self._channel.recv(1 << 16)
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
        channel = self.open_channel()
        self.exec_count += 1
        try:
            channel.exec_command(command)
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
            channel.exec_command(command)
            return RemoteStream(self, channel, command)

        return self.call(f"start {_short(command)}", start)


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
