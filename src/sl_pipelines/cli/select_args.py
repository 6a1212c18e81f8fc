"""Session selection for ``sl-process``: patterns, dates and tracker states, resolved on the server."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sl_pipelines.cli.notify_options import add_notify_options
from sl_pipelines.core.seams import Backend, ProbeRequest
from sl_pipelines.core.selection import Filters, SessionTrackers, choose, is_pattern, parse_day
from sl_pipelines.core.workflow import (
    COMPLETE,
    WorkflowDefinition,
    dataset_members,
    skip_reason,
    tracker_phases,
)
from sl_pipelines.orchestration.sessions import FoundSession, find_sessions
from sl_pipelines.vocabulary import ProcessingPipelines


def add_selection(
    parser: argparse.ArgumentParser,
    *,
    word: str = "SESSION",
    pending: str = "skip sessions this pipeline already completed",
    failed: str = "only sessions whose last run of it failed",
) -> None:
    """Adds the selection options (patterns are explained; dates and tracker states narrow them)."""
    group = parser.add_argument_group(
        "selection",
        f"A {word} may be a pattern, project/animal/session with shell wildcards ('proj/*/*', "
        "'proj/A1/*', 'proj/*/2026-01-*'); the filters narrow what a pattern selects.",
    )
    group.add_argument("--since", metavar="DATE", help="sessions named on or after DATE (2026-01-05)")
    group.add_argument("--until", metavar="DATE", help="sessions named on or before DATE")
    group.add_argument("--pending", action="store_true", help=pending)
    group.add_argument("--failed", action="store_true", help=failed)


def add_run_options(
    parser: argparse.ArgumentParser, *, configs: str, dry_run: str, max_parallel: int, extra: str = ""
) -> None:
    """The options every run of ``sl-process`` takes: where, definitions, dry run, logs, pace, output."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--server", metavar="PROFILE", help="run on the Slurm server of this profile")
    where.add_argument("--local-root", type=Path, metavar="DIR", help="folder of the local backend")
    parser.add_argument("--configs", type=Path, metavar="DIR", help=configs)
    parser.add_argument("--dry-run", action="store_true", help=dry_run)
    parser.add_argument("--keep-logs", action="store_true", help="keep job folders and logs after success")
    parser.add_argument(
        "--poll-interval", type=float, default=None, metavar="S", help="seconds between cycles"
    )
    parser.add_argument(
        "--max-parallel",
        type=int,
        default=max_parallel,
        metavar="N",
        help=f"pipelines in flight at once (default {max_parallel}){extra}",
    )
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON (no live view)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the manager does")
    add_notify_options(parser)


def filters(args: argparse.Namespace) -> Filters:
    """The filters given on the command line."""
    since = parse_day(args.since, "--since") if args.since else None
    until = parse_day(args.until, "--until") if args.until else None
    return Filters(since, until, args.pending, args.failed)


def select(
    backend: Backend, specs: Sequence[str], kind: ProcessingPipelines, wanted: Filters
) -> tuple[list[FoundSession], list[tuple[str, str]]]:
    """The sessions chosen (patterns expanded and filtered on the server, one command per pattern; plain
    names found in one command, as given), and the ones a filter left out with why."""
    chosen: list[FoundSession] = []
    skipped: list[tuple[str, str]] = []
    plain = [spec for spec in specs if not is_pattern(spec)]
    for spec in specs:
        if is_pattern(spec):
            kept, left = choose(backend.select_sessions(spec), kind.tracker_file.value, wanted)
            chosen += [session.session for session in kept]
            skipped += left
    chosen = list(find_sessions(backend, plain)) + chosen
    return chosen, skipped


def print_selection(chosen: Sequence[FoundSession], skipped: Sequence[tuple[str, str]], out: Console) -> None:
    """What a dry run shows of a selection: the sessions chosen, and why the others were not."""
    table = Table(title=f"{len(chosen)} sessions chosen, {len(skipped)} left out", title_justify="left")
    table.add_column("session")
    table.add_column("")
    for found in chosen:
        table.add_row(f"{found.paths.project}/{found.paths.animal}/{found.paths.session}", "chosen")
    for name, why in skipped:
        table.add_row(name, f"left out: {why}", style="dim")
    out.print(table)


def select_for_workflow(
    backend: Backend, specs: Sequence[str], workflow: WorkflowDefinition, wanted: Filters
) -> tuple[list[tuple[FoundSession, tuple[ProcessingPipelines, ...]]], list[tuple[str, str]]]:
    """The sessions a workflow runs on, each with the pipelines already complete on it (skipped with
    ``--pending``), and the ones left out with why.

    Patterns are resolved with every tracker in one command each (dates filter them); plain names are
    found in one command, and with ``--pending`` or ``--failed`` their trackers read in one more.
    ``--pending`` leaves out sessions where every step is complete, ``--failed`` keeps those where one
    failed. A session named twice runs once.
    """
    found: list[SessionTrackers] = []
    skipped: list[tuple[str, str]] = []
    dates = Filters(since=wanted.since, until=wanted.until)
    for spec in specs:
        if is_pattern(spec):
            kept, left = choose(
                backend.select_sessions(spec), ProcessingPipelines.CHECKSUM.tracker_file.value, dates
            )
            found += kept
            skipped += left
    plain = list(find_sessions(backend, [spec for spec in specs if not is_pattern(spec)]))
    found = _with_trackers(backend, plain, workflow, wanted.pending or wanted.failed) + found
    chosen: dict[str, tuple[FoundSession, tuple[ProcessingPipelines, ...]]] = {}
    complete: dict[str, FoundSession] = {}
    for session in found:
        paths = session.paths
        name = f"{paths.project}/{paths.animal}/{paths.session}"
        if name in chosen or name in complete:
            continue
        phases = tracker_phases(workflow, session.trackers, paths.tracking_data)
        why = skip_reason(phases, pending=wanted.pending, failed=wanted.failed)
        if why == COMPLETE:
            complete[name] = session.session
        elif why:
            skipped.append((name, why))
        else:
            done = tuple(p for p, phase in phases.items() if phase == "complete") if wanted.pending else ()
            chosen[name] = (session.session, done)
    members = dataset_members(workflow, list(chosen), list(complete))
    for name in members:  # every step skipped: they are there for the dataset step
        chosen[name] = (complete[name], workflow.pipelines)
    skipped += [(name, COMPLETE) for name in complete if name not in members]
    return list(chosen.values()), skipped


def _with_trackers(
    backend: Backend, sessions: Sequence[FoundSession], workflow: WorkflowDefinition, needed: bool
) -> list[SessionTrackers]:
    """The sessions with the texts of the workflow's trackers (one probe for all), or with none."""
    if not needed or not sessions:
        return [SessionTrackers(s) for s in sessions]
    names = [p.tracker_file.value for p in workflow.pipelines]
    paths = [s.paths.tracker(name) for s in sessions for name in names]
    texts = backend.probe(ProbeRequest(tracker_paths=tuple(paths))).trackers
    return [
        SessionTrackers(s, {n: t for n in names if (t := texts.get(s.paths.tracker(n))) is not None})
        for s in sessions
    ]
