"""A stalled or broken SSH session against the real sshd: every wait has a limit, every error is ours.

Stalls: the sshd processes of the Server's own connection are stopped (SIGSTOP, then SIGCONT), or the
remote command itself stalls; every operation must give up after the profile's command timeout with
RemoteTimeoutError, and the Server must work again once the server answers. Drops: those processes are
killed in the middle of an operation; only errors of :mod:`sl_pipelines.errors` may come out.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import pytest
from conftest import Testbed

from sl_pipelines.adapters.server import Server
from sl_pipelines.errors import HostUnreachableError, RemoteTimeoutError

TIMEOUT = 3.0
"""The profile's command timeout in these tests: how long a stalled operation may wait."""


def _raised_within(seconds: float, operation: Callable[[], object]) -> BaseException | None:
    """Runs ``operation`` in a thread; fails when it is still blocked after ``seconds``."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            operation()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test, which checks its type
            outcome.append(exc)

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    assert outcome, f"still blocked after {seconds:g} s"
    return outcome[0]


def _ours(error: BaseException | None, kind: type[BaseException], context: str = "") -> BaseException:
    assert error is not None, f"no error {context}"
    assert type(error).__module__ == "sl_pipelines.errors", f"{context} {type(error).__qualname__}: {error}"
    assert isinstance(error, kind), f"{context} {type(error).__qualname__}: {error}"
    return error


def _client_port(server: Server) -> int:
    server.run("true")  # connected
    transport = server.transport._client.get_transport()  # type: ignore[union-attr]
    return int(transport.sock.getsockname()[1])  # type: ignore[union-attr]


@contextlib.contextmanager
def _stalled(testbed: Testbed, server: Server) -> Iterator[None]:
    """The server side of this Server's connection is stopped in the block, and resumed after it."""
    pids = testbed.sshd_session_pids(_client_port(server))
    assert pids, "no sshd process holds this connection"
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    return make_server("noacct", command_timeout=TIMEOUT)


# ------------------------------------------------------------------------------------------ stalls


def test_sftp_requests_give_up_on_a_stalled_server(server: Server, testbed: Testbed) -> None:
    folder = server.working_root
    assert server.list_dir(folder) is not None  # the SFTP client is open
    with _stalled(testbed, server):
        for operation in (
            lambda: server.list_dir(folder),
            lambda: server.read_text(folder / "no-such-file"),
            lambda: server.write_text(folder / f"stalled-{os.getpid()}.txt", "text"),
        ):
            started = time.monotonic()
            error = _ours(_raised_within(4 * TIMEOUT, operation), RemoteTimeoutError)
            assert time.monotonic() - started < 2 * TIMEOUT + 1
            assert f"did not answer for {TIMEOUT:g} s" in str(error)
    assert server.read_text(folder / "no-such-file") is None, "works again once the server answers"


def test_a_command_gives_up_on_a_stalled_server(server: Server, testbed: Testbed) -> None:
    with _stalled(testbed, server):
        started = time.monotonic()
        _ours(_raised_within(4 * TIMEOUT, lambda: server.run("true")), RemoteTimeoutError)
        assert time.monotonic() - started < TIMEOUT + 1
    assert server.run("echo back").stdout == "back\n"


@pytest.mark.parametrize("step", ["read", "write", "finish"])
def test_a_stream_gives_up_on_a_command_that_stalls(server: Server, step: str) -> None:
    stream = server.transport.open_stream("sleep 30; cat >/dev/null")
    operations: dict[str, Callable[[], object]] = {
        "read": stream.read,
        "write": lambda: stream.write(b"x" * (64 << 20)),  # more than the channel window
        "finish": stream.finish,
    }
    started = time.monotonic()
    error = _ours(_raised_within(4 * TIMEOUT, operations[step]), RemoteTimeoutError)
    if step != "write":  # a write makes progress until the server's buffers are full, then stalls
        assert time.monotonic() - started < 2 * TIMEOUT + 1
    assert "made no progress" in str(error)
    assert server.run("echo back").stdout == "back\n"


# ------------------------------------------------------------------------------------------ drops


@pytest.mark.parametrize("step", ["read", "write", "finish"])
def test_a_stream_whose_connection_drops_is_host_unreachable(
    server: Server, testbed: Testbed, step: str
) -> None:
    stream = server.transport.open_stream("cat")
    stream.write(b"y" * (1 << 20))
    assert len(stream.read(1 << 20)) == 1 << 20
    for pid in testbed.sshd_session_pids(_client_port_of_stream(server)):
        os.kill(pid, signal.SIGKILL)
    operations: dict[str, Callable[[], object]] = {
        "read": lambda: stream.read(1 << 20),
        "write": lambda: [stream.write(b"y" * (1 << 20)) for _ in range(64)],
        "finish": stream.finish,
    }
    error = _ours(_raised_within(4 * TIMEOUT, operations[step]), HostUnreachableError)
    assert "dropped" in str(error)
    assert server.run("echo back").stdout == "back\n", "the next operation reconnects"


def _client_port_of_stream(server: Server) -> int:
    transport = server.transport._client.get_transport()  # type: ignore[union-attr]
    return int(transport.sock.getsockname()[1])  # type: ignore[union-attr]


def _started(pid: int) -> str:
    """The process's start time (field 22 of /proc/PID/stat), "" once it is gone."""
    with contextlib.suppress(OSError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    return ""


@contextlib.contextmanager
def _sessions_killed_after(testbed: Testbed, seconds: float) -> Iterator[None]:
    """Every SSH session of this testbed dies ``seconds`` after it appeared, while the block runs."""
    stop = threading.Event()
    first_seen: dict[int, float] = {}
    members: dict[int, set[tuple[int, str]]] = {}  # (pid, start time): a session's processes ever seen

    def killer() -> None:
        while not stop.wait(0.05):
            now = time.monotonic()
            for session, pids in testbed.sshd_sessions().items():
                members.setdefault(session, set()).update((pid, _started(pid)) for pid in pids)
                if now - first_seen.setdefault(session, now) > seconds:
                    for pid, started in members[session]:
                        if started and _started(pid) == started:  # still that process, not a reused pid
                            with contextlib.suppress(ProcessLookupError):
                                os.kill(pid, signal.SIGKILL)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def test_operations_on_a_connection_that_keeps_dropping_raise_only_our_errors(
    server: Server, testbed: Testbed, remote_scratch: Callable[[Server], PurePosixPath]
) -> None:
    big = remote_scratch(server) / "big.bin"
    server.run(f"truncate -s 1G {big}", check=True)
    operations: dict[str, Callable[[], object]] = {
        "sftp download": lambda: server.pull_file(big, testbed.state_dir / f"pulled-{os.getpid()}.bin"),
        "idempotent command": lambda: server.run("sleep 2"),
        "non-idempotent command": lambda: server.transport.run("sleep 2", idempotent=False),
    }
    try:
        for name, operation in operations.items():
            with _sessions_killed_after(testbed, 0.5):
                error = _raised_within(60, operation)
            _ours(error, HostUnreachableError, name)
            assert server.run("echo back").stdout == "back\n", name
    finally:
        (testbed.state_dir / f"pulled-{os.getpid()}.bin").unlink(missing_ok=True)
        (testbed.state_dir / f".pulled-{os.getpid()}.bin.part").unlink(missing_ok=True)
