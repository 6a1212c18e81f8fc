"""Rich rendering of pipelines for the command-line interfaces (the library never prints).

Up to :data:`FULL_TABLE_LIMIT` pipelines, every pipeline has its row. Beyond that,
:func:`pipelines_overview` shows totals per status and per stage, the failed pipelines and the most
recently changed ones in full, and the rest in one line: a thousand pipelines stay readable on one
screen (the full table is ``sl-process --json``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from sl_pipelines.cli.usage_view import usage_json
from sl_pipelines.core.stalls import Stall
from sl_pipelines.core.states import JobState
from sl_pipelines.orchestration.pipeline import ProcessingPipeline
from sl_pipelines.vocabulary import ProcessingStatus

STATUS_STYLE = {
    ProcessingStatus.RUNNING: "yellow",
    ProcessingStatus.SUCCEEDED: "green",
    ProcessingStatus.FAILED: "red",
    ProcessingStatus.ABORTED: "magenta",
}


_SHORT_LABELS = {JobState.COMPLETED: "done", JobState.PENDING: "pending", JobState.NOT_FOUND: "waiting"}
_JOB_LABELS = {state: _SHORT_LABELS.get(state, state.value.lower()) for state in JobState}


def job_counts(pipeline: ProcessingPipeline) -> Counter[str]:
    """How many jobs of the current stage are ``done``, ``running``, ``pending``, ``waiting``, ..."""
    states = pipeline.job_states
    waiting = _JOB_LABELS[JobState.NOT_FOUND]
    return Counter(
        _JOB_LABELS[status.state] if (status := states.get(name)) is not None else waiting
        for name in pipeline.spec.stages.get(pipeline.stage, ())
    )


def _counts_text(counts: Counter[str]) -> str:
    return ", ".join(f"{n:,} {label}" for label, n in sorted(counts.items()))


def jobs_summary(pipeline: ProcessingPipeline) -> str:
    """``2 running, 1 pending, 4 done`` for the current stage."""
    return _counts_text(job_counts(pipeline)) or "not submitted"


def stage_label(pipeline: ProcessingPipeline) -> str:
    """``1/3 binarize``: the current stage, of how many, and its name."""
    names = [s.name for s in pipeline.resolved.definition.stages]
    label = f"{pipeline.stage}/{len(names)}"
    return f"{label} {names[pipeline.stage - 1]}" if 0 < pipeline.stage <= len(names) else label


PIPELINE_COLUMNS = ("pipeline", "session", "stage", "jobs", "status")


def pipeline_row(pipeline: ProcessingPipeline) -> list[RenderableType]:
    """The cells of one pipeline's row under :data:`PIPELINE_COLUMNS`."""
    where = f"{pipeline.project}/{pipeline.animal}/{pipeline.session}"
    status = Text(pipeline.status.name, style=STATUS_STYLE[pipeline.status])
    return [pipeline.pipeline.short_name, where, stage_label(pipeline), jobs_summary(pipeline), status]


Stalls = Mapping[str, Sequence[Stall]]
"""Each stalled run's stalls, by run token (``PipelineManager.stalls.current``)."""


def stall_text(stalls: Sequence[Stall]) -> Text:
    """``stalled: plane_1 has run 50 s, 83% of its 60 s time limit`` (empty when nothing stalled)."""
    if not stalls:
        return Text("")
    return Text("stalled: " + "; ".join(stall.detail for stall in stalls), style="bold magenta")


def pipelines_table(
    pipelines: Sequence[ProcessingPipeline], title: str = "", caption: str = "", stalls: Stalls | None = None
) -> Table:
    """A table of every pipeline: session, stage, jobs of the current stage, status (and stalls, if any)."""
    table = Table(title=title or None, caption=caption or None, caption_justify="left", expand=False)
    stalls = stalls or {}
    flagged = any(stalls.get(p.resolved.token) for p in pipelines)
    for column in (*PIPELINE_COLUMNS, *(("stalled",) if flagged else ())):
        table.add_column(column)
    for p in pipelines:
        extra = [stall_text(stalls.get(p.resolved.token, ()))] if flagged else []
        table.add_row(*pipeline_row(p), *extra)
    return table


def failure_details(pipeline: ProcessingPipeline) -> str:
    """The reason, the failed job and the tail of its stderr, for the end-of-run summary."""
    report = pipeline.failure
    if report is None:
        return ""
    where = f"{pipeline.project}/{pipeline.animal}/{pipeline.session}"
    lines = [f"{pipeline.pipeline.short_name} {where}: {report.reason}"]
    if report.stderr_path is not None:
        lines.append(f"  stderr of {report.job}: {report.stderr_path}")
    lines.extend(f"  | {line}" for line in report.stderr_tail.splitlines())
    return "\n".join(lines)


def attempts_details(pipeline: ProcessingPipeline) -> str:
    """Every attempt of each job that was retried: state and resources, for the end-of-run summary."""
    lines = []
    for name, attempts in pipeline.journal.attempts.items():
        if len(attempts) < 2:
            continue
        resolved = pipeline.resolved_job(name)
        steps = " → ".join(
            f"attempt {a.get('attempt', '?')} {a.get('state') or 'RUNNING'} ({a.get('memory_gb', 0):g} GB, "
            f"{a.get('time_limit_minutes', 0)} min, job {a.get('job_id') or '?'})"
            for a in attempts
        )
        lines.append(f"  {resolved.key if resolved else name}: {steps}")
    if not lines:
        return ""
    where = f"{pipeline.project}/{pipeline.animal}/{pipeline.session}"
    return "\n".join([f"{pipeline.pipeline.short_name} {where}: retries", *lines])


def pipeline_json(pipeline: ProcessingPipeline) -> dict[str, Any]:
    """A JSON-ready summary of one pipeline."""
    report = pipeline.failure
    return {
        "pipeline": pipeline.pipeline.short_name,
        "session": f"{pipeline.project}/{pipeline.animal}/{pipeline.session}",
        "status": pipeline.status.name,
        "stage": pipeline.stage,
        "stages": len(pipeline.resolved.stages),
        "manager_id": pipeline.manager_id,
        "run_token": pipeline.resolved.token,
        "tracker": str(pipeline.remote_tracker_path),
        "job_ids": dict(pipeline.journal.job_ids),
        "reason": report.reason if report else None,
        "failed_job": report.job if report else None,
        "stderr_tail": report.stderr_tail if report else None,
        "attempts": dict(pipeline.journal.attempts),
        **usage_json(pipeline),
    }


def progress_caption(cycles: int, elapsed: float, pipelines: Sequence[ProcessingPipeline]) -> str:
    """``12 of 50 finished · cycle 8 · 1m05s · Ctrl-C to stop`` under the live table."""
    done = sum(1 for p in pipelines if not p.is_running)
    minutes, seconds = divmod(int(elapsed), 60)
    return f"{done} of {len(pipelines)} finished · cycle {cycles} · {minutes}m{seconds:02d}s · Ctrl-C to stop"
