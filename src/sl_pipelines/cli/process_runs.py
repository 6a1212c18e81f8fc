"""``sl-process status|attach|cancel|report``: look at the runs recorded on a server from any PC.

``status`` lists every run (its record, its lease, its tracker and its jobs, read in one remote command);
``attach`` watches one run read-only until it ends (Ctrl-C only stops watching); ``cancel`` takes the run
over, cancels its jobs and records why in its tracker and its record; ``report`` writes one run's report
page (timeline, resource use, failures; see :mod:`sl_pipelines.orchestration.report`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.live import Live
from rich.table import Table

from sl_pipelines.cli.backends import close_backend, open_backend
from sl_pipelines.cli.consoles import make_console
from sl_pipelines.core.seams import Backend, RunSnapshot
from sl_pipelines.errors import ConfigurationError, JournalError, SlPipelinesError
from sl_pipelines.orchestration.cycle import cancel_runs
from sl_pipelines.orchestration.journal import RunJournal
from sl_pipelines.orchestration.pipeline import ProcessingPipeline
from sl_pipelines.orchestration.report import build_report, write_report

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
COMMANDS = ("status", "attach", "cancel", "report")


@dataclass(frozen=True)
class RunRow:
    """A run as ``status`` shows it."""

    record: RunJournal
    snapshot: RunSnapshot

    @property
    def stages(self) -> int:
        try:
            data = yaml.safe_load(self.record.definition) if self.record.definition else {}
        except yaml.YAMLError:
            return 0
        return len(data.get("stages") or ()) if isinstance(data, dict) else 0

    def jobs_summary(self) -> str:
        marker = f"-{self.record.stage}-"
        states = Counter(j.state.value.lower() for j in self.snapshot.jobs if marker in j.name)
        return ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "-"

    def driver(self) -> str:
        if self.record.status != "RUNNING":
            return "-"
        lease = dict(line.partition("=")[::2] for line in self.snapshot.lease.splitlines()[1:])
        if not lease:
            return "detached" if self.record.mode == "detached" else "nobody"
        age = self.snapshot.lease_age or 0.0
        return f"pid {lease.get('pid')} of {lease.get('user')} on {lease.get('host')}, seen {age:.0f} s ago"

    def as_json(self) -> dict[str, Any]:
        r = self.record
        return {
            "run_token": r.token,
            "pipeline": r.pipeline,
            "sessions": list(r.sessions),
            "status": r.status,
            "stage": r.stage,
            "stages": self.stages,
            "reason": r.reason or None,
            "driver": self.driver(),
            "started_by": r.started_by,
            "updated_at": r.updated_at,
            "jobs": {j.name: {"id": j.job_id, "state": j.state.value} for j in self.snapshot.jobs},
            "usage": r.usage,
        }


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``sl-process status|attach|cancel|report``."""
    parser = argparse.ArgumentParser(
        prog="sl-process", description="Look at the runs recorded on a server from any PC, or cancel one."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, summary in (
        ("status", "list the runs on the server: stage, jobs, status, who drives them"),
        ("attach", "watch one run until it ends, read-only (Ctrl-C only stops watching)"),
        ("cancel", "cancel a run's jobs and record why in its tracker (asks first)"),
        ("report", "write a run's report: one HTML page with its jobs' timeline, resource use and failures"),
    ):
        sub = commands.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".")
        where = sub.add_mutually_exclusive_group()
        where.add_argument("--server", metavar="PROFILE", help="the server profile (see sl-server profile)")
        where.add_argument("--local-root", type=Path, metavar="DIR", help="the local backend's folder")
        nargs = "*" if name == "status" else 1
        sub.add_argument("runs", nargs=nargs, metavar="TOKEN|SESSION", help="a run token or a session")
    commands.choices["status"].add_argument("--json", action="store_true", help="print JSON, not a table")
    commands.choices["status"].add_argument("--all", action="store_true", help="finished runs too")
    commands.choices["attach"].add_argument("--interval", type=float, default=2.0, metavar="S")
    commands.choices["cancel"].add_argument("--yes", action="store_true", help="do not ask")
    commands.choices["report"].add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="where to write it (default: ./TOKEN.html)"
    )
    return parser


def main(argv: Sequence[str]) -> int:
    """Runs ``status``, ``attach`` or ``cancel``; returns the exit status."""
    args = build_parser().parse_args(argv)
    err = make_console(stderr=True)
    backend: Backend | None = None
    try:
        backend = open_backend(args.server, args.local_root)
        if args.command == "status":
            return _status(backend, args)
        if args.command == "attach":
            return _attach(backend, args.runs[0], args.interval)
        if args.command == "report":
            return _report(backend, args.runs[0], args.output)
        return _cancel(backend, args.runs[0], args.yes, err)
    except SlPipelinesError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        return EXIT_USAGE if isinstance(exc, ConfigurationError | LookupError) else EXIT_FAILED
    finally:
        if backend is not None:
            close_backend(backend)


def rows(backend: Backend, wanted: Sequence[str], *, finished: bool = True) -> list[RunRow]:
    """The runs on the backend (one call), newest first, narrowed to tokens or sessions when given."""
    found = []
    for snapshot in backend.list_runs():
        try:
            record = RunJournal.from_json(snapshot.record, where="run record")
        except JournalError:
            continue
        if (finished or record.status == "RUNNING") and _matches(record, wanted):
            found.append(RunRow(record, snapshot))
    return sorted(found, key=lambda row: row.record.updated_at, reverse=True)


def _matches(record: RunJournal, wanted: Sequence[str]) -> bool:
    if not wanted:
        return True
    names = {record.token, *record.sessions, *(s.rsplit("/", 1)[-1] for s in record.sessions)}
    return any(spec.strip().strip("/") in names for spec in wanted)


def table(found: Sequence[RunRow]) -> Table:
    """The runs as a table."""
    out = Table(title="Runs", title_justify="left")
    for column in ("run", "pipeline", "sessions", "stage", "jobs", "status", "driver", "started"):
        out.add_column(column)
    for row in found:
        r = row.record
        who = f"{r.started_by.get('user', '?')}@{r.started_by.get('host', '?')} {r.started_by.get('at', '')}"
        status = r.status if not r.reason else f"{r.status}: {r.reason}"
        out.add_row(
            r.token,
            r.pipeline,
            ", ".join(r.sessions),
            f"{r.stage}/{row.stages}",
            row.jobs_summary(),
            status,
            row.driver(),
            who,
        )
    return out


def _status(backend: Backend, args: argparse.Namespace) -> int:
    found = rows(backend, args.runs, finished=args.all or bool(args.runs))
    if args.json:
        print(json.dumps([row.as_json() for row in found], indent=2))  # noqa: T201 - the command's output
        return EXIT_OK
    make_console().print(table(found))
    return EXIT_OK


def _one(backend: Backend, spec: str) -> RunRow:
    found = rows(backend, [spec])
    if not found:
        raise ConfigurationError(f"No run {spec!r} is recorded on {backend.name}; see 'sl-process status'.")
    running = [row for row in found if row.record.status == "RUNNING"]
    return (running or found)[0]


def _attach(backend: Backend, spec: str, interval: float) -> int:
    row = _one(backend, spec)
    console = make_console()
    try:
        with Live(table([row]), console=console, refresh_per_second=2) as live:
            while row.record.status == "RUNNING":
                time.sleep(interval)
                row = _one(backend, row.record.token)
                live.update(table([row]))
    except KeyboardInterrupt:
        console.print("Stopped watching; the run goes on.")
        return EXIT_OK
    return EXIT_OK if row.record.status == "SUCCEEDED" else EXIT_FAILED


def _cancel(backend: Backend, spec: str, yes: bool, console: Console) -> int:
    row = _one(backend, spec)
    record = row.record
    if record.status != "RUNNING":
        console.print(f"Run {record.token} already ended: {record.status}.", markup=False)
        return EXIT_OK
    if not yes:
        if not sys.stdin.isatty():
            raise ConfigurationError(
                f"Refusing to cancel run {record.token} without confirmation: pass --yes."
            )
        answer = console.input(
            f"Cancel run {record.token} ({record.pipeline} {', '.join(record.sessions)})? [y/N] "
        )
        if answer.strip().lower() not in ("y", "yes"):
            return EXIT_FAILED
    pipeline = ProcessingPipeline.resume(record, backend, take_over=True)
    reason = f"cancelled with 'sl-process cancel' by {pipeline.holder.user} on {pipeline.holder.host}"
    cancel_runs(backend, [pipeline], reason)
    console.print(f"Cancelled run {record.token}; its tracker and record say why.", markup=False)
    return EXIT_OK


def _report(backend: Backend, spec: str, output: Path | None) -> int:
    row = _one(backend, spec)
    record = row.record
    page = build_report(backend, record, {job.job_id: job.state for job in row.snapshot.jobs})
    path = output or Path(f"{record.token}.html")
    try:
        write_report(path, page)
    except OSError as exc:
        raise ConfigurationError(f"Cannot write the report to {path} ({exc}); give another -o FILE.") from exc
    make_console().print(f"Wrote the report of run {record.token} ({record.status}) to {path}.", markup=False)
    return EXIT_OK
