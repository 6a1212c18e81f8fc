"""Session selection for ``sl-process``: patterns, dates and tracker states, resolved on the server."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from sl_pipelines.core.seams import Backend
from sl_pipelines.core.selection import Filters, choose, is_pattern, parse_day
from sl_pipelines.core.workflow import WorkflowDefinition, skip_reason, tracker_phases
from sl_pipelines.orchestration.sessions import FoundSession, find_sessions
from sl_pipelines.vocabulary import ProcessingPipelines


def add_selection(parser: argparse.ArgumentParser) -> None:
    """Adds the selection options to ``sl-process``."""
    group = parser.add_argument_group(
        "selection",
        "A SESSION may be a pattern, project/animal/session with shell wildcards ('proj/*/*', "
        "'proj/A1/*', 'proj/*/2026-01-*'); the filters narrow what a pattern selects.",
    )
    group.add_argument("--since", metavar="DATE", help="sessions named on or after DATE (2026-01-05)")
    group.add_argument("--until", metavar="DATE", help="sessions named on or before DATE")
    group.add_argument("--pending", action="store_true", help="skip sessions this pipeline already completed")
    group.add_argument("--failed", action="store_true", help="only sessions whose last run of it failed")


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
    ``--pending``), and the ones left out with why. Patterns are resolved with every tracker in one command
    each; ``--pending`` leaves out sessions where every step is complete, ``--failed`` keeps those where
    one failed. Plain names are found in one command and run every step."""
    chosen: list[tuple[FoundSession, tuple[ProcessingPipelines, ...]]] = []
    skipped: list[tuple[str, str]] = []
    dates = Filters(since=wanted.since, until=wanted.until)
    for spec in specs:
        if not is_pattern(spec):
            continue
        kept, left = choose(
            backend.select_sessions(spec), ProcessingPipelines.CHECKSUM.tracker_file.value, dates
        )
        skipped += left
        for session in kept:
            phases = tracker_phases(workflow, session.trackers, session.paths.tracking_data)
            why = skip_reason(phases, pending=wanted.pending, failed=wanted.failed)
            paths = session.paths
            if why:
                skipped.append((f"{paths.project}/{paths.animal}/{paths.session}", why))
                continue
            done = tuple(p for p, phase in phases.items() if phase == "complete") if wanted.pending else ()
            chosen.append((session.session, done))
    plain = [spec for spec in specs if not is_pattern(spec)]
    chosen = [(found, ()) for found in find_sessions(backend, plain)] + chosen
    unique: dict[object, tuple[FoundSession, tuple[ProcessingPipelines, ...]]] = {}
    for found, done in chosen:  # a session two patterns name runs once
        unique.setdefault(found.paths.storage_session, (found, done))
    return list(unique.values()), skipped
