"""``sl-process``: run a pipeline on one or more sessions and watch it until it finishes."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.logging import RichHandler

from sl_pipelines.cli import process_runs, process_workflow
from sl_pipelines.cli.backends import close_backend, open_backend
from sl_pipelines.cli.consoles import make_console
from sl_pipelines.cli.notify_options import build_notices, stall_overrides
from sl_pipelines.cli.overview import LiveView, drive_with_live_view
from sl_pipelines.cli.render import attempts_details, failure_details, pipeline_json
from sl_pipelines.cli.select_args import add_run_options, add_selection, filters, print_selection, select
from sl_pipelines.cli.usage_view import usage_summary
from sl_pipelines.core.definition import ParameterValue
from sl_pipelines.core.layout import JOB_FOLDERS
from sl_pipelines.core.seams import Backend
from sl_pipelines.core.selection import is_pattern
from sl_pipelines.errors import ConfigurationError, SlPipelinesError
from sl_pipelines.orchestration.detach import submit_detached
from sl_pipelines.orchestration.journal import RunJournal, find_unfinished, unfinished_records
from sl_pipelines.orchestration.manager import PipelineManager
from sl_pipelines.orchestration.pipeline import ProcessingPipeline
from sl_pipelines.orchestration.run import RECORD_NAME
from sl_pipelines.orchestration.run_notices import RunNotices, chain
from sl_pipelines.vocabulary import ProcessingPipelines, ProcessingStatus

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

_DESCRIPTION = """Run a processing pipeline on sessions and watch it until it finishes.

Each session gets its own pipeline run (dataset pipelines such as multiday and forging take all the
sessions as one dataset). Jobs run on the Slurm server of a profile (--server, see `sl-server profile`)
or, by default, on this machine through the embedded local backend. Runs are journaled, so a run
whose manager was interrupted is finished with --resume, without submitting anything twice.

Runs live on the server too: `sl-process status|attach|cancel|report --server P ...` looks at them
from any PC (see `sl-process status --help`).

Workflows run several pipelines in order on each session, with parallel steps and a session lock:
`sl-process --workflow lab-daily 'proj/*/*' --pending` (see `sl-process --workflow NAME --help`).

Exit status: 0 when every pipeline succeeded, 1 when any failed or was aborted, 2 for bad input,
130 when interrupted."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``sl-process``."""
    names = ", ".join(p.short_name for p in ProcessingPipelines)
    parser = argparse.ArgumentParser(
        prog="sl-process", description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("pipeline", help=f"the pipeline to run: {names}")
    parser.add_argument(
        "sessions", nargs="+", metavar="SESSION", help="session id, project/animal/session or path"
    )
    add_run_options(
        parser,
        configs="folder of pipeline definitions (YAML)",
        dry_run="print the sessions chosen (and why others were left out), the stages and job scripts; "
        "submit nothing",
        max_parallel=4,
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a pipeline parameter (repeatable)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reattach to the unfinished run of these sessions (from this PC's journal, or from the run's "
        "record on the server when it was started on another PC)",
    )
    parser.add_argument(
        "--detach",
        action="store_true",
        help="submit every stage at once, chained by Slurm dependencies, and exit: the cluster finishes "
        "the run by itself (watch it with `sl-process attach`)",
    )
    parser.add_argument(
        "--take-over",
        action="store_true",
        help="with --resume: take the run over even from a manager that still drives it (it then stops)",
    )
    parser.add_argument(
        "--workflow",
        metavar="NAME",
        help="run a workflow from configs/workflows/ instead of one pipeline; then every positional "
        "argument is a session (see `sl-process --workflow NAME --help`)",
    )
    add_selection(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sl-process``."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] in process_runs.COMMANDS:
        return process_runs.main(arguments)
    if any(a == "--workflow" or a.startswith("--workflow=") for a in arguments):
        return process_workflow.main(arguments)
    args = build_parser().parse_args(arguments)
    console = make_console(stderr=True)
    # On a terminal, log records go through the live view's console, which prints them above the view.
    handler = RichHandler(console=console, show_path=False, markup=False) if console.is_terminal else None
    level = logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler] if handler else None)
    try:
        kind = ProcessingPipelines.from_name(args.pipeline)
        parameters = _parameters(args.param)
    except (ValueError, ConfigurationError) as exc:
        console.print(f"[red]error:[/] {exc}")
        return EXIT_USAGE
    try:
        backend = open_backend(args.server, args.local_root)
    except SlPipelinesError as exc:
        console.print(f"[red]error:[/] {exc}")
        return EXIT_USAGE
    try:
        watch = _Watch(build_notices(args, backend.name), stall_overrides(args))
        pipelines = _build(kind, args, backend, parameters)
        return _act(args, backend, pipelines, console, watch)
    except SlPipelinesError as exc:
        console.print(f"[red]error:[/] {exc}")
        return EXIT_USAGE if isinstance(exc, ConfigurationError | LookupError) else EXIT_FAILED
    finally:
        close_backend(backend)


@dataclass(frozen=True)
class _Watch:
    """What watches a run besides the live view: notifications (None: none asked) and stall thresholds."""

    notices: RunNotices | None
    stalls: dict[str, float | None]


def _act(
    args: argparse.Namespace,
    backend: Backend,
    pipelines: list[ProcessingPipeline],
    console: Console,
    watch: _Watch,
) -> int:
    """Prints the scripts (--dry-run), hands the runs to the cluster (--detach), or drives them."""
    if args.dry_run:
        _print_dry_run(pipelines)
        return EXIT_OK
    if args.detach:
        return _detach(args, backend, pipelines, console)
    return _run(args, backend, pipelines, console, watch)


def _parameters(items: Sequence[str]) -> dict[str, ParameterValue]:
    result: dict[str, ParameterValue] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(f"--param {item!r} must look like KEY=VALUE (for example planes=4).")
        value = value.strip()
        result[key.strip()] = int(value) if value.isdigit() else value
    return result


def _build(
    kind: ProcessingPipelines,
    args: argparse.Namespace,
    backend: Backend,
    parameters: dict[str, ParameterValue],
) -> list[ProcessingPipeline]:
    found, skipped = select(backend, list(args.sessions), kind, filters(args))  # one call per pattern
    if args.dry_run and (skipped or any(is_pattern(spec) for spec in args.sessions)):
        print_selection(found, skipped, Console(soft_wrap=True))
    if not found:
        raise ConfigurationError("No session matches the selection; see --dry-run for why each was left out.")
    dataset = kind in (ProcessingPipelines.MULTIDAY, ProcessingPipelines.FORGING)
    groups = [list(found)] if dataset else [[session] for session in found]
    pipelines = []
    for group in groups:
        if args.resume:
            journal = _unfinished(
                kind, backend, tuple(f"{f.paths.project}/{f.paths.animal}/{f.paths.session}" for f in group)
            )
            if args.detach and journal.mode != "detached":
                journal = journal.save(mode="detached")  # the rest of the run goes to the cluster
            elif journal.mode == "detached" and journal.stage > 0:
                raise ConfigurationError(
                    f"Run {journal.token} is detached: the cluster carries it. Watch it with 'sl-process "
                    f"attach {journal.token}', or cancel it with 'sl-process cancel {journal.token}'."
                )
            pipelines.append(ProcessingPipeline.resume(journal, backend, take_over=args.take_over))
            continue
        pipelines.append(
            ProcessingPipeline.create(
                kind,
                group,
                backend,
                configs_dir=args.configs,
                parameters=parameters,
                keep_job_logs=args.keep_logs,
                dry_run=args.dry_run,
                detached=args.detach,
            )
        )
    return pipelines


def _unfinished(kind: ProcessingPipelines, backend: Backend, ids: tuple[str, ...]) -> RunJournal:
    """The unfinished run of these sessions: this PC's journal, else the newest record on the server."""
    journal = find_unfinished(kind.short_name, backend.name, ids)
    if journal is not None:
        return journal
    records = backend.read_files(backend.working_root / JOB_FOLDERS, RECORD_NAME)
    found = unfinished_records(records, kind.short_name, ids)
    if not found:
        raise ConfigurationError(
            f"No unfinished {kind.short_name} run of {', '.join(ids)} on {backend.name} to resume; "
            "run without --resume to start one."
        )
    return found[0]


def _print_dry_run(pipelines: Sequence[ProcessingPipeline]) -> None:
    out = Console(soft_wrap=True)  # scripts are printed as they are, never wrapped
    shown = pipelines if len(pipelines) <= 5 else pipelines[:1]
    for p in shown:
        out.rule(f"{p.pipeline.short_name}: {p.project}/{p.animal}/{p.session}")
        out.print(f"manager id {p.manager_id}, run token {p.resolved.token}, tracker {p.remote_tracker_path}")
        for stage, jobs in sorted(p.resolved.stages.items()):
            out.print(f"[bold]stage {stage}[/] ({len(jobs)} job{'s' if len(jobs) > 1 else ''})")
            for resolved in jobs:
                out.print(f"[dim]# {resolved.job.script_path}[/]")
                out.print(resolved.job.render(), markup=False, highlight=False)
    if len(shown) < len(pipelines):
        out.print(f"... and {len(pipelines) - len(shown)} more runs of the same shape (scripts not shown).")


def _run(
    args: argparse.Namespace,
    backend: Backend,
    pipelines: list[ProcessingPipeline],
    console: Console,
    watch: _Watch,
) -> int:
    interval = (
        args.poll_interval if args.poll_interval is not None else (1.0 if backend.name == "local" else 5.0)
    )
    manager = PipelineManager(
        backend,
        pipelines,
        max_parallel=args.max_parallel,
        poll_interval=interval,
        stall_thresholds=watch.stalls,
    )
    told = watch.notices.after_cycle if watch.notices is not None else None
    try:
        if args.json:
            manager.run(observer=told)
        else:
            drive_with_live_view(
                console,
                manager,
                lambda observer, sleep: manager.run(observer=chain(observer, told), sleep=sleep),
            )
    except KeyboardInterrupt:
        return _interrupted(manager, console)
    if watch.notices is not None:
        watch.notices.at_end(pipelines)
    return _summarize(args, pipelines, console)


def _detach(
    args: argparse.Namespace, backend: Backend, pipelines: list[ProcessingPipeline], console: Console
) -> int:
    submit_detached(backend, pipelines)
    where = f"--server {args.server}" if args.server else f"--local-root {args.local_root}"
    if args.json:
        print(json.dumps([pipeline_json(p) for p in pipelines], indent=2))  # noqa: T201 - the command's output
    for p in pipelines:
        if p.detached:
            what = f"{p.pipeline.short_name} {p.project}/{p.animal}/{p.session}"
            watch = f"sl-process attach {where} {p.resolved.token}"
            message = f"Run {p.resolved.token} ({what}) is the cluster's now: watch it with '{watch}'."
            console.print(message, markup=False, highlight=False)
        else:
            console.print(failure_details(p), markup=False, highlight=False)
    return EXIT_OK if all(p.detached for p in pipelines) else EXIT_FAILED


def _interrupted(manager: PipelineManager, console: Console) -> int:
    running = [p for p in manager.pipelines if p.is_running]
    if not running:
        return EXIT_INTERRUPTED
    answer = "n"
    if sys.stdin.isatty():
        answer = console.input("Interrupted. Cancel the submitted jobs? \\[y/N] ").strip().lower()
    if answer in ("y", "yes"):
        manager.cancel_all("cancelled by the user (Ctrl-C)")
        console.print("Cancelled the jobs and recorded the cancellation in each tracker.")
    else:
        console.print(
            "Jobs keep running on the server and their trackers stay owned by this run; "
            "run the same command with --resume to reattach."
        )
    return EXIT_INTERRUPTED


def _summarize(args: argparse.Namespace, pipelines: Sequence[ProcessingPipeline], console: Console) -> int:
    if args.json:
        print(json.dumps([pipeline_json(p) for p in pipelines], indent=2))  # noqa: T201 - the command's output
    else:
        make_console().print(LiveView().render(pipelines, title="Summary"))
        used = usage_summary(pipelines)
        if used is not None:
            make_console(markup=False).print(used)
        for p in pipelines:
            if retries := attempts_details(p):
                console.print(retries, markup=False, highlight=False)
            if p.failure is not None:
                console.print(failure_details(p), markup=False, highlight=False)
    ok = all(p.status is ProcessingStatus.SUCCEEDED for p in pipelines)
    return EXIT_OK if ok else EXIT_FAILED
