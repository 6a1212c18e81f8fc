"""The tracker protocol every worker follows inside its Slurm job.

``start`` joins the run, the body does the work, ``stop`` records this job's completion. Any exception
in the body records a failure with a one-line reason and propagates. SIGTERM (what Slurm sends on a
time limit or ``scancel``) and SIGINT are turned into :class:`WorkerInterrupted` raised inside the body,
so they are recorded too; Python's default SIGTERM handling would skip every ``finally``.
"""

from __future__ import annotations

import logging
import shlex
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import IO

from sl_pipelines.adapters.locks import LockKind
from sl_pipelines.adapters.tracker_store import ProcessingTracker
from sl_pipelines.errors import SlPipelinesError, TrackerError, WorkerError
from sl_pipelines.workers.usage import UsageMeter

_LOG = logging.getLogger("sl_pipelines")

#: Longest failure reason written to the tracker; the job's log keeps the rest.
MAX_REASON = 300
#: Signals that become :class:`WorkerInterrupted` inside a tracked body.
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: Seconds a wrapped program gets to exit after a forwarded SIGTERM before it is killed.
DEFAULT_GRACE = 20.0


class WorkerInterrupted(WorkerError):
    """The worker received a termination signal (Slurm time limit, ``scancel``, Ctrl-C)."""

    def __init__(self, signum: int) -> None:
        name = signal.Signals(signum).name
        super().__init__(
            f"The worker received {name} (a Slurm time limit, a cancel or Ctrl-C) and stopped before "
            "finishing; raise the job's time limit or run it again."
        )
        self.signum = signum


def failure_reason(exc: BaseException) -> str:
    """The short one-line reason recorded in the tracker for ``exc``: its type and first message line."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


class _SignalGuard:
    """Raises :class:`WorkerInterrupted` for the first handled signal while armed; ignores later ones."""

    def __init__(self) -> None:
        self.armed = True
        self.received: int | None = None

    def handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        if self.armed:
            self.armed = False
            raise WorkerInterrupted(signum)
        _LOG.warning("Ignoring %s while the failure is being recorded.", signal.Signals(signum).name)


@contextmanager
def _raising_signals() -> Iterator[_SignalGuard]:
    """Installs the guard's handler for SIGTERM and SIGINT (main thread only) and restores the old ones."""
    guard = _SignalGuard()
    if threading.current_thread() is not threading.main_thread():
        _LOG.debug("Not in the main thread: termination signals keep their handlers.")
        yield guard
        return
    previous = {sig: signal.signal(sig, guard.handle) for sig in HANDLED_SIGNALS}
    try:
        yield guard
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _record_failure(tracker: ProcessingTracker, manager_id: int, job: str, exc: BaseException) -> None:
    """Records ``exc`` as the run's failure; a tracker that refuses is logged, the original error wins."""
    reason = failure_reason(exc)
    try:
        tracker.error(manager_id, job=job, reason=reason)
    except SlPipelinesError as tracker_exc:
        _LOG.error("Could not record the failure of job %s in %s: %s", job, tracker.path, tracker_exc)
        exc.add_note(f"The failure could not be recorded in the tracker: {tracker_exc}")
    else:
        _LOG.info("Recorded the failure of job %s in %s: %s", job, tracker.path, reason)


@contextmanager
def tracked(
    tracker_path: Path | str,
    manager_id: int,
    job_count: int,
    job: str,
    *,
    report: bool = True,
    lock_kind: LockKind | str | None = None,
    timeout: float = 10.0,
) -> Iterator[ProcessingTracker]:
    """Runs the body as job ``job`` of ``manager_id``'s run, reporting its outcome in the tracker.

    Args:
        tracker_path: the run's tracker file.
        manager_id: the id of the manager that owns the run.
        job_count: how many jobs the run has (used when this job is the first to start it).
        job: this job's identity in the run; each identity completes once.
        report: record the completion; False leaves it unrecorded (a fault-injection aid).
        lock_kind, timeout: passed to :class:`ProcessingTracker`.

    Inside a job (``SL_USAGE_DIR`` set), what the body used is written beside the report, success or not
    (see :mod:`sl_pipelines.workers.usage`).

    Raises:
        TrackerError: the tracker refused the start (another manager's run, corrupt file, lock timeout).
        WorkerInterrupted: SIGTERM or SIGINT arrived; the failure was recorded first.
        BaseException: whatever the body raised, after the failure was recorded.
    """
    tracker = ProcessingTracker(tracker_path, lock_kind=lock_kind, timeout=timeout)
    started = False
    meter = UsageMeter()
    with _raising_signals() as guard:
        try:
            tracker.start(manager_id, job_count)
            started = True
            try:
                yield tracker
            finally:
                meter.write()
            if report:
                tracker.stop(manager_id, job=job)
            else:
                _LOG.warning("Job %s finished without recording its completion (--no-report).", job)
        except BaseException as exc:
            guard.armed = False
            if started or not isinstance(exc, TrackerError):  # a refused start has nothing to fail
                _record_failure(tracker, manager_id, job, exc)
            raise


def _tee_stderr(stream: IO[bytes], tail: deque[str]) -> None:
    """Copies the program's stderr to ours line by line, keeping the last lines."""
    for raw in iter(stream.readline, b""):
        text = raw.decode("utf-8", "replace")
        sys.stderr.write(text)
        sys.stderr.flush()
        if text.strip():
            tail.append(text.strip())
    stream.close()


def _stop_child(process: subprocess.Popen[bytes], signum: int, grace: float) -> None:
    """Forwards ``signum`` to the program, then kills it if it has not exited after ``grace`` seconds."""
    if process.poll() is not None:
        return
    process.send_signal(signum)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        _LOG.warning("Program %d ignored %s for %.0f s; killing it.", process.pid, signum, grace)
        process.kill()
        process.wait()


def _exit_error(argv: Sequence[str], code: int, tail: deque[str]) -> WorkerError:
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with exit code {code}"
    last = f": {tail[-1]}" if tail else " and wrote nothing on stderr"
    return WorkerError(f"Program {Path(argv[0]).name} {how}{last} (command: {shlex.join(argv)}).")


def run_program(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    grace: float = DEFAULT_GRACE,
) -> None:
    """Runs ``argv`` to completion, forwarding a :class:`WorkerInterrupted` to it as its signal.

    Raises:
        WorkerError: the program could not be started or exited non-zero (the message holds the exit
            code and the last line of its stderr).
        WorkerInterrupted: a termination signal arrived; the program was stopped first.
    """
    if not argv:
        raise WorkerError("No program to run was given; put the command after '--'.")
    try:
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except OSError as exc:
        raise WorkerError(
            f"Cannot start program {argv[0]!r} because {exc.strerror or exc}; check that it is installed "
            "in the job's environment."
        ) from exc
    assert process.stderr is not None  # stderr=PIPE above
    tail: deque[str] = deque(maxlen=5)
    reader = threading.Thread(target=_tee_stderr, args=(process.stderr, tail), daemon=True)
    reader.start()
    try:
        code = process.wait()
    except WorkerInterrupted as exc:
        _stop_child(process, exc.signum, grace)
        raise
    finally:
        reader.join(timeout=5.0)
    if code != 0:
        raise _exit_error(argv, code, tail)


def run_wrapped(
    argv: Sequence[str],
    *,
    tracker_path: Path | str,
    manager_id: int,
    job_count: int,
    job: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    grace: float = DEFAULT_GRACE,
    lock_kind: LockKind | str | None = None,
) -> None:
    """Runs an external program (the lab's own) as job ``job`` of a run, inside the tracker protocol.

    Raises:
        WorkerError: the program could not be started or exited non-zero; recorded in the tracker first.
        WorkerInterrupted: a termination signal arrived; forwarded to the program and recorded.
        TrackerError: the tracker refused the start.
    """
    with tracked(tracker_path, manager_id, job_count, job, lock_kind=lock_kind):
        run_program(argv, cwd=cwd, env=env, grace=grace)
