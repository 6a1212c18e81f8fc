"""Session selection for ``sl-process``: patterns, dates and tracker states, resolved on the server."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from sl_pipelines.core.seams import Backend
from sl_pipelines.core.selection import Filters, choose, is_pattern, parse_day
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
