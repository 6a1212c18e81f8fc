"""``sl-tracker runs``, ``gate`` and ``settle``: what ``sl-process status`` and the jobs of a detached run
run on the server."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sl_pipelines.adapters.run_listing import bash_probe, collect_runs, encode_snapshots
from sl_pipelines.core.slurm import AccountingMode
from sl_pipelines.vocabulary import ProcessingStatus
from sl_pipelines.workers.detached import gate, settle_run

EXIT_OK, EXIT_STOP = 0, 1


def add_commands(commands: Any, options: argparse.ArgumentParser) -> None:
    """Adds ``runs``, ``gate`` and ``settle`` to sl-tracker's commands."""
    _add_runs(commands)
    gate_parser = commands.add_parser(
        "gate",
        parents=[options],
        help="detached runs: let a job work only when the previous stage completed",
        description="Exit 0 when every job named by --after reported its completion and no failure is "
        "recorded; otherwise record why (if nothing is recorded yet) and exit 1.",
    )
    gate_parser.add_argument("path", type=Path, metavar="PATH", help="the tracker YAML file")
    gate_parser.add_argument("--manager-id", type=int, required=True, metavar="N")
    gate_parser.add_argument("--job", required=True, metavar="J", help="this job's name")
    gate_parser.add_argument("--after", nargs="+", required=True, metavar="JOB", help="the previous stage")
    settle_parser = commands.add_parser(
        "settle",
        help="detached runs: decide how the run ended and write it into its tracker and record",
        description="Read every job's final state and the tracker, record the outcome (exit 0 either way).",
    )
    settle_parser.add_argument("--record", type=Path, required=True, metavar="RUN_JSON")
    settle_parser.add_argument("--mode", choices=[m.value for m in AccountingMode], default="scontrol")


def handle(args: argparse.Namespace) -> int:
    """Runs ``gate`` or ``settle``; returns the exit status."""
    if args.command == "gate":
        why = gate(args.path, args.manager_id, args.job, args.after)
        if why is None:
            return EXIT_OK
        sys.stderr.write(f"sl-tracker gate: {why}\n")
        return EXIT_STOP
    verdict = settle_run(args.record, AccountingMode(args.mode))
    outcome = "succeeded" if verdict.status is ProcessingStatus.SUCCEEDED else f"failed: {verdict.reason}"
    sys.stdout.write(f"The run {outcome}\n")
    return EXIT_OK


def _add_runs(commands: Any) -> None:
    runs = commands.add_parser(
        "runs",
        help="every run recorded under a working root, with its lease, tracker and jobs (framed JSON)",
        description="List the runs recorded under WORKING_ROOT/sl_jobs (what `sl-process status` shows).",
    )
    runs.add_argument("--working-root", type=Path, required=True, metavar="DIR", help="the working volume")
    runs.add_argument(
        "--mode", choices=[m.value for m in AccountingMode], default="scontrol", help="sacct or scontrol"
    )


def handle_runs(args: argparse.Namespace, streams: Any) -> int:
    """Prints every run recorded under the working root, with its lease, tracker and jobs (framed JSON)."""
    snapshots = collect_runs(args.working_root, bash_probe(AccountingMode(args.mode)))
    streams.out.file.write(encode_snapshots(snapshots) + "\n")
    return EXIT_OK
