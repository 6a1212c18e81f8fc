"""``sl-tracker``: look at a processing tracker file, report into it, or reset a stuck one.

The handlers take any object with the tracker's methods (:class:`TrackerHandle`), so the same
subcommands can later drive a tracker on a remote server; all rendering stays in this module.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Protocol, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from sl_pipelines.adapters.locks import LockKind
from sl_pipelines.adapters.tracker_ops import apply_operations
from sl_pipelines.adapters.tracker_store import ProcessingTracker
from sl_pipelines.cli import tracker_detached
from sl_pipelines.cli.consoles import make_console
from sl_pipelines.core.tracker_state import TrackerPhase, TrackerState
from sl_pipelines.core.wire import decode_operations, encode_outcomes
from sl_pipelines.errors import ConfigurationError, SlPipelinesError, TrackerCorruptError, TrackerError

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
#: Seconds to wait for the lock when --timeout is not given.
DEFAULT_TIMEOUT = 10.0

_DESCRIPTION = """Inspect or change a processing tracker: the YAML file in which the Slurm jobs of a
pipeline run report their progress. Every command takes the path of the tracker file and holds its
lock file (<file>.lock) while it reads or writes.

commands:
  status  show who owns the tracker, how many jobs completed, and any failure (--json for programs)
  start   start a run owned by a manager id, or join it (every job of a run calls this)
  stop    record that one job of the run completed (the job defaults to the Slurm job of the caller)
  error   mark the run failed by one job, with a short reason
  abort   reset the tracker to idle whoever owns it: the emergency unlock, also for a corrupt file
  gate    detached runs: a later job works only when the previous stage completed (else exits 1)
  settle  detached runs: the final job that decides how the run ended and records it
  runs    every run recorded under a working root with its lease, tracker and jobs (sl-process status)
  batch   apply a manager's claims, failure records, retries and aborts, read as JSON from stdin (one framed
          result line on stdout): what a manager runs on the server, one command per cycle

remote use (a session's trackers on a server, through a profile; or on the local backend):
  sl-tracker --server PROFILE status SESSION [--json]
  sl-tracker --server PROFILE abort SESSION --pipeline NAME [--yes]
  (--local-root DIR instead of --server for the embedded local backend)

exit status: 0 on success, 1 when the tracker refused or failed (one sentence on stderr), 2 for bad
arguments or an abort without confirmation."""

_PHASE_STYLE = {
    TrackerPhase.IDLE: "dim",
    TrackerPhase.RUNNING: "yellow",
    TrackerPhase.COMPLETE: "green",
    TrackerPhase.FAILED: "red",
}


class TrackerHandle(Protocol):
    """What the subcommands need from a tracker: :class:`ProcessingTracker` or a remote stand-in."""

    @property
    def path(self) -> PurePath: ...

    def read(self) -> TrackerState: ...

    def start(self, manager_id: int, job_count: int = 1) -> TrackerState: ...

    def stop(self, manager_id: int, job: str | None = None) -> TrackerState: ...

    def error(self, manager_id: int, job: str | None = None, reason: str = "") -> TrackerState: ...

    def abort(self) -> TrackerState: ...


class AbortableTracker(Protocol):
    """What ``abort`` needs: the remote form of ``sl-tracker`` offers only this much."""

    @property
    def path(self) -> PurePath: ...

    def read(self) -> TrackerState: ...

    def abort(self) -> TrackerState: ...


@dataclass(frozen=True)
class CliStreams:
    """Where a handler reads confirmations from and writes its output to."""

    stdin: TextIO
    out: Console
    err: Console


class UsageError(ConfigurationError):
    """The command line asks for something the command will not do (exit status 2)."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``sl-tracker``."""
    parser = argparse.ArgumentParser(
        prog="sl-tracker",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_global_options()],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    status = _command(commands, "status", "show the state of a tracker", handle_status)
    status.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    start = _command(commands, "start", "start a run owned by --manager-id, or join it", handle_start)
    _manager_option(start)
    start.add_argument("--job-count", type=_positive_int, default=1, metavar="N", help="jobs in the run")
    stop = _command(commands, "stop", "record that one job of the run completed", handle_stop)
    _manager_option(stop)
    stop.add_argument("--job", metavar="J", help="job identity (default: the caller's Slurm job)")
    error = _command(commands, "error", "mark the run failed by one job", handle_error)
    _manager_option(error)
    error.add_argument("--job", metavar="J", help="job identity (default: the caller's Slurm job)")
    error.add_argument("--reason", default="", metavar="TEXT", help="a short reason for the failure")
    abort = _command(commands, "abort", "reset the tracker to idle (asks first on a terminal)", handle_abort)
    abort.add_argument("--yes", action="store_true", help="do not ask; required when stdin is not a terminal")
    commands.add_parser(
        "batch",
        help="apply tracker operations read as JSON from stdin; prints one framed result line",
        description=(
            "Apply a manager's tracker operations (claim, error, abort), read as a JSON list from stdin. "
            "Prints one line '@@SLP@@ result <JSON list>' with one outcome per operation."
        ),
        parents=[_global_options()],
    )
    tracker_detached.add_commands(commands, _global_options())
    return parser


def handle_batch(args: argparse.Namespace, streams: CliStreams) -> int:
    """Applies the operations read from stdin; prints the framed outcomes (exit 0 unless unreadable)."""
    try:
        operations = decode_operations(streams.stdin.read())
    except (ValueError, KeyError, TypeError) as exc:
        streams.err.print(Text(f"error: the batch request on stdin is not valid ({exc}).", style="red"))
        return EXIT_USAGE
    outcomes = apply_operations(
        operations, lock_kind=getattr(args, "lock", None), timeout=getattr(args, "timeout", DEFAULT_TIMEOUT)
    )
    streams.out.file.write(encode_outcomes(outcomes) + "\n")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sl-tracker``; returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0].split("=", 1)[0] in ("--server", "--local-root"):
        from sl_pipelines.cli import tracker_remote  # noqa: PLC0415 - the remote form needs the backends

        return tracker_remote.main(arguments)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on bad arguments
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    streams = CliStreams(
        stdin=sys.stdin,
        # No markup: paths and failure reasons may contain [brackets] that must print as they are.
        out=make_console(markup=False, highlight=False),
        err=make_console(stderr=True, markup=False, highlight=False),
    )
    special: dict[str, Callable[[argparse.Namespace, CliStreams], int]] = {
        "batch": handle_batch,
        "runs": tracker_detached.handle_runs,
        "gate": lambda a, _: tracker_detached.handle(a),
        "settle": lambda a, _: tracker_detached.handle(a),
    }
    if args.command in special:
        return special[args.command](args, streams)
    try:
        tracker = ProcessingTracker(
            args.path,
            lock_kind=getattr(args, "lock", None),
            timeout=getattr(args, "timeout", DEFAULT_TIMEOUT),
        )
        handler: Callable[[TrackerHandle, argparse.Namespace, CliStreams], int] = args.handler
        return handler(tracker, args, streams)
    except SlPipelinesError as exc:
        streams.err.print(Text(f"error: {exc}", style="red"))
        return EXIT_USAGE if isinstance(exc, ConfigurationError) else EXIT_ERROR


def handle_status(tracker: TrackerHandle, args: argparse.Namespace, streams: CliStreams) -> int:
    """Prints the tracker's state as a table, or as JSON with ``--json``; a missing file is an error."""
    if isinstance(tracker.path, Path) and not tracker.path.is_file():
        raise TrackerError(
            f"There is no tracker file {tracker.path}; check the path (a tracker is created when a pipeline "
            "first runs on the session).",
            path=tracker.path,
        )
    state = tracker.read()
    if args.json:
        streams.out.file.write(json.dumps(status_payload(state, tracker.path)) + "\n")
    else:
        streams.out.print(status_table(state, tracker.path))
    return EXIT_OK


def handle_start(tracker: TrackerHandle, args: argparse.Namespace, streams: CliStreams) -> int:
    """Starts (or joins) the run of ``--manager-id``."""
    state = tracker.start(args.manager_id, args.job_count)
    streams.out.print(summary_line(state, tracker.path))
    return EXIT_OK


def handle_stop(tracker: TrackerHandle, args: argparse.Namespace, streams: CliStreams) -> int:
    """Records the completion of one job of the run of ``--manager-id``."""
    state = tracker.stop(args.manager_id, args.job)
    streams.out.print(summary_line(state, tracker.path))
    return EXIT_OK


def handle_error(tracker: TrackerHandle, args: argparse.Namespace, streams: CliStreams) -> int:
    """Marks the run of ``--manager-id`` failed."""
    state = tracker.error(args.manager_id, args.job, args.reason)
    streams.out.print(summary_line(state, tracker.path))
    return EXIT_OK


def handle_abort(tracker: AbortableTracker, args: argparse.Namespace, streams: CliStreams) -> int:
    """Resets the tracker to idle after a confirmation (or ``--yes``) and prints what was reset."""
    try:
        before = summary_line(tracker.read(), tracker.path)
        corrupt = False
    except TrackerCorruptError as exc:
        before, corrupt = str(exc), True
    if not args.yes:
        if not streams.stdin.isatty():
            raise UsageError(
                f"Refusing to abort tracker {tracker.path} without confirmation because stdin is not a "
                "terminal: pass --yes to reset it."
            )
        streams.out.print(before)
        streams.out.print(f"Reset tracker {tracker.path} to idle? [y/N] ", end="")
        if streams.stdin.readline().strip().lower() not in ("y", "yes"):
            streams.out.print("Nothing was reset.")
            return EXIT_ERROR
    previous = tracker.abort()
    was = "a corrupt file" if corrupt else describe_state(previous)
    streams.out.print(f"Reset tracker {tracker.path} to idle; it held {was}.")
    return EXIT_OK


def status_payload(state: TrackerState, path: PurePath) -> dict[str, Any]:
    """The JSON object printed by ``status --json``: every fact of the tracker, by name."""
    failure = None
    if state.failure is not None:
        failure = {"job": state.failure.job, "reason": state.failure.reason, "at": state.failure.at}
    return {
        "path": str(path),
        "status": state.phase.value,
        "manager_id": state.manager_id,
        "job_count": state.job_count,
        "completed_jobs": list(state.completed_jobs),
        "running": state.is_running,
        "complete": state.is_complete,
        "error": state.encountered_error,
        "failure": failure,
        "started_at": state.started_at,
        "updated_at": state.updated_at,
        "retries": [retry.as_dict() for retry in state.retries],
    }


def status_table(state: TrackerState, path: PurePath) -> Table:
    """A two-column table of the tracker's facts, for people."""
    table = Table(show_header=False, title=str(path), title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("status", Text(state.phase.value, style=_PHASE_STYLE[state.phase]))
    table.add_row("manager id", "-" if state.manager_id is None else str(state.manager_id))
    table.add_row("jobs complete", f"{len(state.completed_jobs)} of {state.job_count}")
    table.add_row("completed jobs", ", ".join(state.completed_jobs) or "-")
    if state.failure is not None:
        table.add_row("failed job", state.failure.job)
        table.add_row("reason", state.failure.reason or "-")
        table.add_row("failed at", state.failure.at)
    for retry in state.retries:
        reason = f": {retry.reason}" if retry.reason else ""
        table.add_row("retried", f"{retry.job} as attempt {retry.attempt} at {retry.at}{reason}")
    table.add_row("started at", state.started_at or "-")
    table.add_row("updated at", state.updated_at or "-")
    return table


def describe_state(state: TrackerState) -> str:
    """``a running run of manager 7 (2 of 4 jobs complete)``, or ``an idle tracker``."""
    if state.manager_id is None:
        return "an idle tracker"
    text = f"a {state.phase.value} run of manager {state.manager_id} "
    text += f"({len(state.completed_jobs)} of {state.job_count} jobs complete"
    if state.failure is not None:
        text += f"; job {state.failure.job} failed: {state.failure.reason or 'no reason given'}"
    return text + ")"


def summary_line(state: TrackerState, path: PurePath) -> str:
    """One line saying what the tracker at ``path`` holds."""
    return f"Tracker {path} holds {describe_state(state)}."


def _global_options() -> argparse.ArgumentParser:
    # SUPPRESS keeps a subcommand's copy of an option from overwriting the one given before it.
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--lock",
        choices=[kind.value for kind in LockKind],
        default=argparse.SUPPRESS,
        help="lock kind: file (default; local disks) or soft (NFS); default from $SL_TRACKER_LOCK",
    )
    options.add_argument(
        "--timeout",
        type=_timeout,
        default=argparse.SUPPRESS,
        metavar="S",
        help="seconds to wait for the lock before giving up (default 10)",
    )
    return options


def _command(
    commands: Any,
    name: str,
    summary: str,
    handler: Callable[[TrackerHandle, argparse.Namespace, CliStreams], int],
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=summary, description=f"{summary[0].upper()}{summary[1:]}.", parents=[_global_options()]
    )
    parser.add_argument("path", type=Path, metavar="PATH", help="the tracker YAML file")
    parser.set_defaults(handler=handler)
    return parser


def _manager_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--manager-id",
        type=_manager_id,
        required=True,
        metavar="N",
        help="id of the manager that owns the run",
    )


def _positive_int(text: str) -> int:
    value = _manager_id(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def _manager_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number of seconds >= 0")
    return value
