"""``sl-tracker --server PROFILE …``: a session's trackers on a server (or the local backend).

``status SESSION`` shows every pipeline's tracker of the session, read in one round trip;
``abort SESSION --pipeline NAME`` resets one stuck tracker after a confirmation. The change itself
is made where the tracker lives (``sl-tracker batch`` on the server), under the tracker's lock. An abort
also releases the session's workflow lock, if a workflow run holds it (that run then starts no further
step on the session); ``unlock SESSION`` releases only the workflow lock.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path, PurePath, PurePosixPath

from rich.console import Console
from rich.table import Table
from rich.text import Text

from sl_pipelines.cli.backends import close_backend, open_backend
from sl_pipelines.cli.consoles import make_console
from sl_pipelines.cli.project_table import project_table
from sl_pipelines.cli.tracker import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    CliStreams,
    describe_state,
    handle_abort,
    status_payload,
)
from sl_pipelines.core.layout import SessionPaths
from sl_pipelines.core.seams import Backend, ProbeRequest, TrackerAction, TrackerOperation
from sl_pipelines.core.selection import is_pattern
from sl_pipelines.core.stalls import StallThresholds, tracker_stall
from sl_pipelines.core.tracker_state import IDLE_STATE, TrackerState
from sl_pipelines.core.tracker_text import parse_tracker_text
from sl_pipelines.errors import ConfigurationError, SlPipelinesError, TrackerCorruptError, TrackerError
from sl_pipelines.orchestration.session_locks import lock_path, release_locks
from sl_pipelines.orchestration.sessions import find_session
from sl_pipelines.vocabulary import ProcessingPipelines

REMOTE_OPTIONS = ("--server", "--local-root")


class RemoteTracker:
    """A tracker on a backend: read over the connection, reset under its lock where it lives."""

    def __init__(self, backend: Backend, path: PurePosixPath) -> None:
        self.backend = backend
        self._path = path

    @property
    def path(self) -> PurePath:
        """The tracker file on the server."""
        return self._path

    def read(self) -> TrackerState:
        """The tracker's state (idle when the file does not exist)."""
        text = self.backend.read_text(self._path)
        return IDLE_STATE if text is None else parse_tracker_text(text, path=self._path)

    def abort(self) -> TrackerState:
        """Resets the tracker on the server; returns what it held (idle if it was corrupt)."""
        try:
            previous = self.read()
        except TrackerCorruptError:
            previous = IDLE_STATE
        (outcome,) = self.backend.update_trackers([TrackerOperation(TrackerAction.ABORT, self._path)])
        if not outcome.ok:
            raise TrackerError(f"On {self.backend.name}: {outcome.error}", path=self._path)
        return previous


def build_parser() -> argparse.ArgumentParser:
    """The parser of the remote form of ``sl-tracker``."""
    parser = argparse.ArgumentParser(
        prog="sl-tracker",
        description="Show a session's trackers on a server, or reset one that is stuck.",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--server", metavar="PROFILE", help="the server profile (see sl-server profile)")
    where.add_argument("--local-root", type=Path, metavar="DIR", help="the local backend's folder")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    status = commands.add_parser("status", help="every pipeline's tracker of a session")
    status.add_argument(
        "session",
        help="session id, project/animal/session, a path, or a pattern: 'proj/*/*' for a project table",
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.add_argument(
        "--stall-after",
        type=_minutes,
        default=StallThresholds().tracker_quiet_minutes,
        metavar="MINUTES",
        help="flag a running tracker as stalled when it has not changed for this long "
        f"(default {StallThresholds().tracker_quiet_minutes:g})",
    )
    status.add_argument(
        "--csv", action="store_true", help="with a pattern: print CSV (session, one column per pipeline)"
    )
    abort = commands.add_parser("abort", help="reset one tracker of a session (asks first)")
    abort.add_argument("session", help="session id, project/animal/session, or path")
    abort.add_argument("--pipeline", required=True, help="which pipeline's tracker (short name)")
    abort.add_argument("--yes", action="store_true", help="do not ask; required when stdin is not a terminal")
    unlock = commands.add_parser(
        "unlock",
        help="release the session's workflow lock (asks first): that run starts no further step on it",
    )
    unlock.add_argument("session", help="session id, project/animal/session, or path")
    unlock.add_argument(
        "--yes", action="store_true", help="do not ask; required when stdin is not a terminal"
    )
    return parser


def main(argv: Sequence[str]) -> int:
    """Runs the remote form; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    out = make_console(markup=False, highlight=False)
    err = make_console(stderr=True, markup=False, highlight=False)
    backend: Backend | None = None
    try:
        backend = open_backend(args.server, args.local_root)
        if args.command == "status" and is_pattern(args.session):
            shown = {"as_json": args.json, "as_csv": args.csv, "stall_after": args.stall_after}
            return project_table(backend, args.session, out=out, **shown)
        session = find_session(backend, args.session)
        if args.command == "status":
            return _status(backend, session.tracking_data, args.json, out, args.stall_after)
        return _change(backend, session, args, CliStreams(stdin=sys.stdin, out=out, err=err))
    except (SlPipelinesError, ValueError) as exc:
        err.print(Text(f"error: {exc}", style="red"))
        return EXIT_USAGE if isinstance(exc, ConfigurationError | LookupError | ValueError) else EXIT_ERROR
    finally:
        if backend is not None:
            close_backend(backend)


def _change(backend: Backend, session: SessionPaths, args: argparse.Namespace, streams: CliStreams) -> int:
    """``unlock``, or ``abort`` (which also releases the session's workflow lock)."""
    if args.command == "unlock":
        return _unlock(backend, session, args.yes, streams)
    pipeline = ProcessingPipelines.from_name(args.pipeline)
    tracker = RemoteTracker(backend, session.tracker(pipeline.tracker_file.value))
    code = handle_abort(tracker, args, streams)
    if code == EXIT_OK and backend.read_text(lock_path(session)) is not None:
        return _unlock(backend, session, True, streams)
    return code


def _unlock(backend: Backend, session: SessionPaths, yes: bool, streams: CliStreams) -> int:
    """Releases the session's workflow lock after a confirmation (or ``--yes``), naming who held it."""
    path = lock_path(session)
    text = backend.read_text(path)
    if text is None:
        streams.out.print(f"No workflow holds {path}; nothing to release.")
        return EXIT_OK
    lines = text.splitlines()
    info = dict(line.partition("=")[::2] for line in lines[1:])
    who = f"pid {info.get('pid', '?')} of {info.get('user', '?')} on {info.get('host', '?')}"
    owner = f"workflow run {lines[0] if lines else '?'} ({who}, started {info.get('started', '?')})"
    if not yes:
        if not streams.stdin.isatty():
            raise ConfigurationError(
                f"Refusing to release {path} without confirmation as stdin is not a terminal: pass --yes."
            )
        streams.out.print(f"{path} is held by {owner}.")
        streams.out.print("Release it (that run starts no further step on this session)? [y/N] ", end="")
        if streams.stdin.readline().strip().lower() not in ("y", "yes"):
            streams.out.print("Nothing was released.")
            return EXIT_ERROR
    (problem,) = release_locks(backend, [session])
    if problem:
        raise TrackerError(f"On {backend.name}: {problem}", path=path)
    streams.out.print(f"Released the workflow lock of {path}; it was held by {owner}.")
    return EXIT_OK


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of minutes (for example 90)")
    return value


def _status(backend: Backend, folder: PurePosixPath, as_json: bool, out: Console, stall_after: float) -> int:
    paths = {p: folder / p.tracker_file.value for p in ProcessingPipelines}
    texts = backend.probe(ProbeRequest(tracker_paths=tuple(paths.values()))).trackers
    rows: list[tuple[ProcessingPipelines, PurePosixPath, TrackerState | None, str]] = []
    for pipeline, path in paths.items():
        text = texts.get(path)
        try:
            state = IDLE_STATE if text is None else parse_tracker_text(text, path=path)
            rows.append((pipeline, path, state, ""))
        except TrackerCorruptError as exc:
            rows.append((pipeline, path, None, str(exc)))
    now = datetime.now(tz=UTC)
    stalled = {p: tracker_stall(s, now, stall_after) for p, _, s, _ in rows if s is not None}
    if as_json:
        payload = [
            {"pipeline": p.short_name, **status_payload(s, path), "stalled": stalled.get(p) or None}
            if s
            else {"pipeline": p.short_name, "corrupt": e}
            for p, path, s, e in rows
        ]
        out.file.write(json.dumps(payload, indent=2) + "\n")
        return EXIT_OK
    table = Table(title=str(folder), title_justify="left")
    for column in ("pipeline", "status", "tracker"):
        table.add_column(column)
    for pipeline, _path, found, problem in rows:
        status = Text("corrupt", style="red") if found is None else Text(found.phase.value)
        if stalled.get(pipeline):
            status.append(" stalled", style="bold magenta")
        detail = problem or describe_state(found or IDLE_STATE)
        detail += f"; stalled: {stalled[pipeline]}" if stalled.get(pipeline) else ""
        table.add_row(pipeline.short_name, status, detail)
    out.print(table)
    return EXIT_OK
