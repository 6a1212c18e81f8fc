"""Limits for the waits paramiko does without one, so that a stalled server cannot hang a caller.

paramiko waits without a limit for the answer to a channel request (``exec_command``,
``invoke_subsystem``) and for a command's exit status; a server that stops answering (overloaded,
suspended, a dead network path that TCP has not given up on) would block the caller for TCP's give-up
time, many minutes. Each such wait gets a deadline here: at the deadline the channel is closed, which
wakes paramiko, and the caller gets :class:`TimeoutError`. Reads and writes of data are limited by the
channel's own timeout (:meth:`paramiko.Channel.settimeout`), set where channels are opened.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import paramiko


def request_within(channel: paramiko.Channel, request: Callable[[], None], timeout: float) -> None:
    """Runs a channel request (exec, subsystem); closes the channel if no answer came within ``timeout``.

    Raises:
        TimeoutError: the server did not answer in time (the channel is closed).
    """
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        channel.close()

    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    timer.start()
    try:
        request()
    except (paramiko.SSHException, EOFError, OSError) as exc:
        if expired.is_set():
            raise TimeoutError(f"no answer from the server within {timeout:g} s") from exc
        raise
    finally:
        timer.cancel()
    if expired.is_set():  # the answer came just as the deadline closed the channel
        raise TimeoutError(f"no answer from the server within {timeout:g} s")


def exit_status_within(channel: paramiko.Channel, timeout: float) -> int:
    """The command's exit status (-1 when the server sent none), waiting at most ``timeout`` seconds.

    Raises:
        TimeoutError: the command had not ended in time.
    """
    if not channel.status_event.wait(timeout):
        raise TimeoutError(f"the command did not end within {timeout:g} s")
    return channel.recv_exit_status()
