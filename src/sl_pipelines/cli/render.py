"""Rich rendering of pipelines for the command-line interfaces (the library never prints)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from rich.table import Table
from rich.text import Text

from sl_pipelines.core.states import JobState
from sl_pipelines.orchestration.pipeline import ProcessingPipeline
from sl_pipelines.vocabulary import ProcessingStatus

_STATUS_STYLE = {
    ProcessingStatus.RUNNING: "yellow",
    ProcessingStatus.SUCCEEDED: "green",
    ProcessingStatus.FAILED: "red",
    ProcessingStatus.ABORTED: "magenta",
}


def jobs_summary(pipeline: ProcessingPipeline) -> str:
    """``2 running, 1 pending, 4 done`` for the current stage."""
    names = [r.name for r in pipeline.resolved.stages.get(pipeline.stage, ())]
    if not names:
        return "not submitted"
    counts: Counter[str] = Counter()
    for name in names:
        status = pipeline.job_states.get(name)
        state = status.state if status is not None else JobState.NOT_FOUND
        label = {
            JobState.COMPLETED: "done",
            JobState.RUNNING: "running",
            JobState.PENDING: "pending",
            JobState.NOT_FOUND: "waiting",
        }.get(state, state.value.lower())
        counts[label] += 1
    return ", ".join(f"{n} {label}" for label, n in sorted(counts.items()))


def pipelines_table(pipelines: Sequence[ProcessingPipeline], title: str = "", caption: str = "") -> Table:
    """A table of every pipeline: session, stage, jobs of the current stage, status."""
    table = Table(title=title or None, caption=caption or None, caption_justify="left", expand=False)
    for column in ("pipeline", "session", "stage", "jobs", "status"):
        table.add_column(column)
    for p in pipelines:
        stage_names = [s.name for s in p.resolved.definition.stages]
        stage = f"{p.stage}/{len(stage_names)}"
        if 0 < p.stage <= len(stage_names):
            stage += f" {stage_names[p.stage - 1]}"
        status = Text(p.status.name, style=_STATUS_STYLE[p.status])
        table.add_row(
            p.pipeline.short_name, f"{p.project}/{p.animal}/{p.session}", stage, jobs_summary(p), status
        )
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
    }


def progress_caption(cycles: int, elapsed: float, pipelines: Sequence[ProcessingPipeline]) -> str:
    """``12 of 50 finished · cycle 8 · 1m05s · Ctrl-C to stop`` under the live table."""
    done = sum(1 for p in pipelines if not p.is_running)
    minutes, seconds = divmod(int(elapsed), 60)
    return f"{done} of {len(pipelines)} finished · cycle {cycles} · {minutes}m{seconds:02d}s · Ctrl-C to stop"
