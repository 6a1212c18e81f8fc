"""``sl-worker``: the server-side commands that run inside the Slurm jobs of a pipeline.

Every command except ``generate`` runs as one job of a pipeline run and reports into the run's tracker:
it joins the run, does its work, and records its completion or its failure (with a one-line reason)
before it exits. The pipeline definitions in ``configs/`` fill in the tracker options.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import PurePosixPath
from typing import TextIO

from sl_pipelines.cli.worker_args import build_parser
from sl_pipelines.core.layout import SessionPaths
from sl_pipelines.core.retry import ATTEMPT_VARIABLE
from sl_pipelines.errors import SlPipelinesError
from sl_pipelines.workers.archiving import archive_session
from sl_pipelines.workers.checksum import resolve_checksum
from sl_pipelines.workers.demo import held_memory, run_demo
from sl_pipelines.workers.demo_data import generate_project
from sl_pipelines.workers.manifest import generate_manifest
from sl_pipelines.workers.preparation import TransferResult, prepare_session
from sl_pipelines.workers.protocol import WorkerInterrupted, run_program, tracked

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
#: Exit status after a signal: 128 + the signal's number, as a shell reports it.
EXIT_SIGNAL_BASE = 128


def _session(args: argparse.Namespace) -> SessionPaths:
    return SessionPaths(
        PurePosixPath(args.storage_root.absolute()),
        PurePosixPath(args.working_root.absolute()),
        args.project,
        args.animal,
        args.session,
    )


def _transfer_text(verb: str, result: TransferResult) -> str:
    if not result.copied:
        return f"{result.destination} already holds a verified copy (checksum {result.checksum})."
    return (
        f"{verb} {result.files} files ({result.size_bytes} bytes) from {result.source} to "
        f"{result.destination}, verified (checksum {result.checksum})."
    )


def _checksum(args: argparse.Namespace) -> str:
    result = resolve_checksum(
        _session(args), create_missing=args.create_missing, recalculate=args.recalculate
    )
    action = "stored" if result.written else "verified"
    return f"Checksum {result.checksum} {action} for {result.folder}."


def _manifest(args: argparse.Namespace) -> str:
    path, rows = generate_manifest(args.storage_root.absolute(), args.working_root.absolute(), args.project)
    return f"Wrote {path} ({len(rows)} sessions)."


def _demo(args: argparse.Namespace) -> str:
    attempt = int(os.environ.get(ATTEMPT_VARIABLE) or 1)
    strained = args.until_attempt is None or attempt <= args.until_attempt
    with held_memory(args.allocate_mb if strained else 0):
        result = run_demo(
            _session(args),
            pipeline=args.pipeline,
            part=args.part,
            inputs=args.inputs,
            planes=args.planes,
            plane=args.plane,
            seconds=args.seconds if strained else 0.0,
            fail=args.fail,
            memory_mb=args.memory_mb,
            cpu_seconds=args.cpu_seconds,
        )
    return f"Demo part {args.part} wrote {len(result.files)} files into {result.output}."


def _run(args: argparse.Namespace) -> str:
    program = args.program[1:] if args.program[:1] == ["--"] else args.program
    run_program(program, grace=args.grace)
    return f"Program {program[0]} finished."


_TRACKED: dict[str, Callable[[argparse.Namespace], str]] = {
    "checksum": _checksum,
    "prepare": lambda args: _transfer_text("Copied", prepare_session(_session(args), lock_kind=args.lock)),
    "archive": lambda args: _transfer_text("Moved", archive_session(_session(args), lock_kind=args.lock)),
    "manifest": _manifest,
    "demo": _demo,
    "run": _run,
}


def _generate(args: argparse.Namespace) -> str:
    sessions = generate_project(
        args.storage_root.absolute(),
        args.project,
        args.animal,
        args.sessions_per_animal,
        sessions=args.session,
        planes=args.planes,
        size_kb=args.size_kb,
        seed=args.seed,
    )
    return "\n".join(f"{s.storage_session}\t{s.checksum}" for s in sessions)


def _say(text: str, stream: TextIO | None = None) -> None:
    out = sys.stdout if stream is None else stream
    out.write(text + "\n")
    out.flush()


def _execute(args: argparse.Namespace) -> int:
    """Runs the command; returns its exit status (library errors propagate)."""
    if args.command == "generate":
        _say(_generate(args))
        return EXIT_OK
    time.sleep(getattr(args, "sleep_before_start", 0.0))
    exit_code: int | None = getattr(args, "exit_code", None)
    report = not getattr(args, "no_report", False)
    try:
        with tracked(
            args.tracker,
            args.manager_id,
            args.job_count,
            args.job,
            report=report,
            lock_kind=args.lock,
            timeout=args.lock_timeout,
        ):
            message = _TRACKED[args.command](args)
    except SlPipelinesError as exc:
        if exit_code is None:
            raise
        _say(f"sl-worker: error: {exc} (exiting {exit_code} as asked by --exit-code)", sys.stderr)
        return exit_code
    _say(message)
    return EXIT_OK if exit_code is None else exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sl-worker``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run" and not [part for part in args.program if part != "--"]:
        parser.error("run needs a program to run after '--'")
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        return _execute(args)
    except WorkerInterrupted as exc:
        _say(f"sl-worker: error: {exc}", sys.stderr)
        return EXIT_SIGNAL_BASE + exc.signum
    except SlPipelinesError as exc:
        _say(f"sl-worker: error: {exc}", sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        _say("sl-worker: error: interrupted before the job started; nothing was recorded.", sys.stderr)
        return EXIT_SIGNAL_BASE + 2
