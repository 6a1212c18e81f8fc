"""``sl-process --workflow NAME SELECTION...``: run a workflow (pipelines in order per session)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sl_pipelines.cli.backends import close_backend, open_backend
from sl_pipelines.cli.consoles import make_console
from sl_pipelines.cli.notify_options import build_notices, stall_overrides
from sl_pipelines.cli.overview import drive_with_live_view
from sl_pipelines.cli.render import failure_details, pipeline_json
from sl_pipelines.cli.select_args import (
    add_run_options,
    add_selection,
    filters,
    print_selection,
    select_for_workflow,
)
from sl_pipelines.cli.usage_view import usage_summary
from sl_pipelines.core.definition import load_definition
from sl_pipelines.core.seams import Backend
from sl_pipelines.core.workflow import (
    NextKind,
    WorkflowDefinition,
    available_workflows,
    load_workflow,
    workflow_path,
)
from sl_pipelines.errors import ConfigurationError, SlPipelinesError
from sl_pipelines.orchestration.manager import PipelineManager
from sl_pipelines.orchestration.pipeline import default_configs_dir
from sl_pipelines.orchestration.run_notices import RunNotices, chain
from sl_pipelines.orchestration.workflow import WorkflowRun
from sl_pipelines.vocabulary import ProcessingPipelines

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

_DESCRIPTION = """Run a workflow: pipelines in order on every session selected, with parallel steps.

A workflow is YAML in configs/workflows/ (the package's, or --configs DIR/workflows/):

  workflow: lab-daily
  steps:
    - checksum
    - preparation
    - [behavior, suite2p, video]      # a list runs side by side on the session
    - archiving                       # a dataset pipeline (multiday, forging) may be the last step

Each session advances on its own: a step starts as soon as every pipeline of the previous step succeeded
on that session, and a failure stops only that session's later steps. All sessions share one manager
(one probe per polling cycle). A dataset pipeline as last step runs once per project over the sessions
that reached it. Then the manifest of every project touched is regenerated.

Every session is locked to the workflow run for its whole duration (tracking_data/workflow/lease on the
server: the run, user, host, pid and start time; renewed each cycle). A session another live workflow
holds is left out, naming the owner; the lock goes at the end, or with `sl-tracker unlock SESSION` (or
`sl-tracker abort`), after which that session starts no further step.

Example:  sl-process --workflow lab-daily 'proj/*/*' --pending --server lab

Exit status: 0 when every session finished every step, 1 when any failed, was stopped or left out,
2 for bad input, 130 when interrupted."""


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``sl-process --workflow``."""
    parser = argparse.ArgumentParser(
        prog="sl-process --workflow",
        usage="sl-process --workflow NAME SELECTION [SELECTION ...] [options]",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    names = ", ".join(available_workflows(default_configs_dir())) or "none shipped"
    parser.add_argument("--workflow", required=True, metavar="NAME", help=f"the workflow to run ({names})")
    parser.add_argument(
        "sessions",
        nargs="+",
        metavar="SELECTION",
        help="session id, project/animal/session, path, or a pattern such as 'proj/*/*'",
    )
    add_run_options(
        parser,
        configs="folder of pipeline definitions, with workflows/ in it",
        dry_run="print the sessions chosen (and why others were left out) and the steps each will run; "
        "lock and submit nothing",
        max_parallel=16,
    )
    add_selection(
        parser,
        word="SELECTION",
        pending="leave out sessions where every step is complete, and skip the steps already complete on "
        "the others",
        failed="only sessions where a step failed",
    )
    return parser


def main(argv: Sequence[str]) -> int:
    """Entry point of ``sl-process --workflow``; returns the exit status."""
    args = build_parser().parse_args(argv)
    console = make_console(stderr=True)
    configs = args.configs or default_configs_dir()
    try:
        workflow = _load(configs, args.workflow)
        backend = open_backend(args.server, args.local_root)
    except SlPipelinesError as exc:
        console.print(f"[red]error:[/] {exc}")
        return EXIT_USAGE
    try:
        notices, stalls = build_notices(args, backend.name), stall_overrides(args)
        chosen, skipped = select_for_workflow(backend, list(args.sessions), workflow, filters(args))
        if args.dry_run or skipped:
            print_selection([found for found, _ in chosen], skipped, Console(soft_wrap=True))
        if not chosen:
            raise ConfigurationError(
                "No session matches the selection; see --dry-run for why each was left out."
            )
        run = WorkflowRun(workflow, backend, chosen, configs_dir=args.configs, keep_job_logs=args.keep_logs)
        if args.dry_run:
            make_console().print(plan_table(run))
            return EXIT_OK
        return _run(args, backend, run, console, (notices, stalls))
    except SlPipelinesError as exc:
        console.print(f"[red]error:[/] {exc}")
        return EXIT_USAGE if isinstance(exc, ConfigurationError | LookupError) else EXIT_FAILED
    finally:
        close_backend(backend)


def _load(configs: Path, name: str) -> WorkflowDefinition:
    """The workflow and, checked now, the definition of every pipeline it runs."""
    path = workflow_path(configs, name)
    if not path.is_file():
        known = ", ".join(available_workflows(configs)) or "none"
        raise ConfigurationError(f"No workflow {name!r} in {path.parent} (there: {known}).", path=path)
    workflow = load_workflow(path)
    for pipeline in (*workflow.pipelines, *workflow.dataset, ProcessingPipelines.MANIFEST):
        load_definition(configs / f"{pipeline.short_name}.yaml")
    return workflow


def plan_table(run: WorkflowRun) -> Table:
    """What a dry run shows: the steps each session will run (steps already complete are skipped)."""
    workflow = run.workflow
    table = Table(title=escape(f"Workflow {workflow.name}: {workflow.describe()}"), title_justify="left")
    table.add_column("session")
    table.add_column("steps")
    for progress in run.sessions:
        parts = []
        for step in workflow.steps:
            names = [
                p.short_name if p not in progress.complete else f"({p.short_name}: complete)" for p in step
            ]
            parts.append(names[0] if len(names) == 1 else f"[{', '.join(names)}]")
        if set(workflow.pipelines) <= set(progress.complete):
            parts = [f"every step complete: a member of the {_names(workflow.dataset)} dataset"]
        table.add_row(escape(progress.name), escape(" → ".join(parts)))
    after = [f"{p.short_name} over the sessions that reach it (per project)" for p in workflow.dataset]
    projects = sorted({s.found.paths.project for s in run.sessions})
    after.append(f"manifest of {', '.join(projects)}")
    table.caption = escape("then: " + "; then ".join(after))
    table.caption_justify = "left"
    return table


def _names(pipelines: Sequence[ProcessingPipelines]) -> str:
    return ", ".join(p.short_name for p in pipelines)


def _run(
    args: argparse.Namespace,
    backend: Backend,
    run: WorkflowRun,
    console: Console,
    watch: tuple[RunNotices | None, dict[str, float | None]],
) -> int:
    notices, stalls = watch
    interval = (
        args.poll_interval if args.poll_interval is not None else (1.0 if backend.name == "local" else 5.0)
    )
    manager = PipelineManager(
        backend, [], max_parallel=args.max_parallel, poll_interval=interval, stall_thresholds=stalls
    )
    told = notices.after_cycle if notices is not None else None
    try:
        if args.json:
            run.run(manager, observer=told)
        else:
            drive_with_live_view(
                console,
                manager,
                lambda observer, sleep: run.run(manager, observer=chain(observer, told), sleep=sleep),
                prefix=f"workflow {run.token} · ",
            )
    except KeyboardInterrupt:
        return _interrupted(run, manager, console)
    if notices is not None:
        notices.at_end(manager.pipelines)
    return _summarize(args, run, console)


def _interrupted(run: WorkflowRun, manager: PipelineManager, console: Console) -> int:
    if not any(p.is_running for p in manager.pipelines):
        run.release(manager)
        return EXIT_INTERRUPTED
    answer = "n"
    if sys.stdin.isatty():
        answer = console.input("Interrupted. Cancel the submitted jobs? \\[y/N] ").strip().lower()
    if answer in ("y", "yes"):
        manager.cancel_all("cancelled by the user (Ctrl-C)")
        run.release(manager)
        console.print(
            "Cancelled the jobs, recorded the cancellation in each tracker, and released the locks."
        )
    else:
        console.print(
            "Jobs keep running on the server. The sessions stay locked to this workflow run until its locks "
            "go stale (or 'sl-tracker unlock'); run the workflow again with --pending to go on."
        )
    return EXIT_INTERRUPTED


def outcome_json(run: WorkflowRun) -> dict[str, Any]:
    """Everything a workflow run did, JSON-ready."""
    sessions = []
    for progress in run.sessions:
        decision = progress.decision
        sessions.append(
            {
                "session": progress.name,
                "outcome": decision.kind.value,
                "reason": decision.reason or None,
                "skipped_complete": [p.short_name for p in progress.complete],
                "pipelines": {p.short_name: pipeline_json(r) for p, r in progress.runs.items()},
                "could_not_start": {p.short_name: why for p, why in progress.errors.items()},
            }
        )
    return {
        "workflow": run.workflow.name,
        "run": run.token,
        "succeeded": run.succeeded,
        "sessions": sessions,
        "refused": [{"session": r.session, "locked_by": r.owner} for r in run.refused],
        "dataset": [pipeline_json(p) for p in run.dataset_runs],
        "manifest": [pipeline_json(p) for p in run.manifest_runs],
        "errors": list(run.final_errors),
    }


def summary_table(run: WorkflowRun) -> Table:
    """One row per session: each step's outcome, and where the session ended."""
    table = Table(title=f"Workflow {run.workflow.name} ({run.token})", title_justify="left")
    table.add_column("session")
    for pipeline in run.workflow.pipelines:
        table.add_column(pipeline.short_name)
    table.add_column("outcome")
    for progress in run.sessions:
        cells = []
        for pipeline in run.workflow.pipelines:
            if pipeline in progress.runs:
                cells.append(progress.runs[pipeline].status.name.lower())
            elif pipeline in progress.errors:
                cells.append("not started")
            else:
                cells.append("complete before" if pipeline in progress.complete else "-")
        decision = progress.decision
        outcome = "done" if decision.kind is NextKind.DONE else f"stopped: {decision.reason}"
        table.add_row(progress.name, *cells, outcome, style=None if decision.kind is NextKind.DONE else "red")
    for refusal in run.refused:
        table.add_row(
            refusal.session, *["-"] * len(run.workflow.pipelines), f"left out: locked by {refusal.owner}"
        )
    for extra in (*run.dataset_runs, *run.manifest_runs):
        count = len(extra.journal.sessions)
        over = f"of {extra.project}" if count == 1 else f"over {count} sessions of {extra.project}"
        table.add_row(
            f"{extra.pipeline.short_name} {over}",
            *[""] * len(run.workflow.pipelines),
            extra.status.name.lower(),
        )
    return table


def _summarize(args: argparse.Namespace, run: WorkflowRun, console: Console) -> int:
    if args.json:
        print(json.dumps(outcome_json(run), indent=2))  # noqa: T201 - the command's output
    else:
        make_console(markup=False).print(summary_table(run))
        used = usage_summary(run.pipelines)
        if used is not None:
            make_console(markup=False).print(used)
        for pipeline in run.pipelines:
            if pipeline.failure is not None:
                console.print(failure_details(pipeline), markup=False, highlight=False)
        for problem in run.final_errors:
            console.print(f"error: {problem}", markup=False, highlight=False)
    return EXIT_OK if run.succeeded else EXIT_FAILED
