"""What the jobs used, for the end-of-run summary and ``--json``: per stage, CPU-hours, and hints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from sl_pipelines.core.usage_report import StageTotals, UsageEntry, hours, request_hints, stage_totals
from sl_pipelines.orchestration.pipeline import ProcessingPipeline

SHOWN_HINTS = 8
"""Hints shown under the summary; ``--json`` has them all."""


def usage_entries(pipeline: ProcessingPipeline) -> list[UsageEntry]:
    """The pipeline's usage records, each with its stage's name and its job kind (definition name)."""
    stages = pipeline.resolved.definition.stages
    keys = {r.name: (r.stage, r.key) for r in pipeline.resolved.all_jobs()}
    entries = []
    for record in pipeline.journal.usage.values():
        stage, key = keys.get(str(record.get("name", "")), (int(record.get("stage", 0) or 0), ""))
        templates = [t.name for t in stages[stage - 1].jobs] if 0 < stage <= len(stages) else []
        kind = next((t for t in templates if key == t or key.startswith(f"{t}-")), key or "?")
        name = stages[stage - 1].name if 0 < stage <= len(stages) else str(stage)
        entries.append(UsageEntry(pipeline.pipeline.short_name, stage, name, kind, record))
    return entries


def usage_json(pipeline: ProcessingPipeline) -> dict[str, Any]:
    """``usage`` (by job id), ``usage_by_stage`` and ``usage_hints`` of one pipeline, for ``--json``."""
    entries = usage_entries(pipeline)
    return {
        "usage": dict(pipeline.journal.usage),
        "usage_by_stage": [totals.as_json() for totals in stage_totals(entries)],
        "usage_hints": request_hints(entries),
    }


def _gb(mb: float | None) -> str:
    return f"{mb / 1024:.2f}" if mb is not None else "?"


def _peak(totals: StageTotals) -> str:
    return f"{_gb(totals.max_rss_mb)} of {_gb(totals.requested_memory_mb)} GB"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{seconds:.1f}s"


def usage_summary(pipelines: Sequence[ProcessingPipeline]) -> RenderableType | None:
    """The table of what each stage's jobs used over all the pipelines, CPU-hours in all, and the hints;
    None when no job's usage is known."""
    entries = [entry for p in pipelines for entry in usage_entries(p)]
    if not entries:
        return None
    totals = stage_totals(entries)
    table = Table(title="What the jobs used", title_justify="left", expand=False)
    for column in ("stage", "jobs", "CPU-hours", "CPU efficiency", "peak memory", "longest", "queue wait"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    kinds = {t.pipeline for t in totals}
    for t in totals:
        label = f"{t.stage} {t.stage_name}"
        efficiency = f"{t.cpu_efficiency:.0%}" if t.cpu_efficiency is not None else "?"
        limit = f" of {t.time_limit_minutes} min" if t.time_limit_minutes else ""
        table.add_row(
            f"{t.pipeline} {label}" if len(kinds) > 1 else label,
            str(t.jobs),
            hours(t.cpu_hours),
            efficiency,
            _peak(t),
            _duration(t.longest_s) + limit,
            _duration(t.max_queue_wait_s),
        )
    total = sum(t.cpu_hours for t in totals)
    sources = sorted({str(e.record.get("source", "?")) for e in entries})
    parts: list[RenderableType] = [
        table,
        Text(f"{hours(total)} CPU-hours in all ({len(entries)} jobs; from {' and '.join(sources)})"),
    ]
    hints = request_hints(entries)
    parts += [Text(f"hint: {hint}", style="yellow") for hint in hints[:SHOWN_HINTS]]
    if len(hints) > SHOWN_HINTS:
        parts.append(Text(f"... and {len(hints) - SHOWN_HINTS} more hints (sl-process --json has them all)"))
    return Group(*parts)
