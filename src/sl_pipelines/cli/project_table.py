"""``sl-tracker --server P status 'proj/*/*'``: the project at a glance, sessions by pipelines.

One remote command reads every matching session's trackers; the table colours each cell (complete with
its date, failed with the job, running with its owner, idle), with totals per pipeline; ``--json`` and
``--csv`` give the same facts to programs.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from sl_pipelines.core.seams import Backend
from sl_pipelines.core.selection import SessionTrackers
from sl_pipelines.core.stalls import tracker_stall
from sl_pipelines.core.tracker_state import TrackerPhase, TrackerState
from sl_pipelines.core.tracker_text import parse_tracker_text
from sl_pipelines.errors import TrackerCorruptError
from sl_pipelines.vocabulary import ProcessingPipelines

_STYLE = {"complete": "green", "failed": "red", "running": "yellow", "idle": "dim", "corrupt": "bold red"}


def cell(
    found: SessionTrackers, pipeline: ProcessingPipelines, stall_after: float | None = None
) -> dict[str, Any]:
    """One session's state for one pipeline, as facts (``stalled`` when a running tracker has not
    changed for ``stall_after`` minutes)."""
    text = found.trackers.get(pipeline.tracker_file.value)
    if text is None:
        return {"status": "idle"}
    path = found.paths.tracker(pipeline.tracker_file.value)
    try:
        state: TrackerState = parse_tracker_text(text, path=path)
    except TrackerCorruptError as exc:
        return {"status": "corrupt", "problem": str(exc)}
    facts: dict[str, Any] = {"status": state.phase.value, "updated_at": state.updated_at}
    if state.phase is TrackerPhase.RUNNING:
        facts["manager_id"] = state.manager_id
        stalled = tracker_stall(state, datetime.now(tz=UTC), stall_after) if stall_after else ""
        if stalled:
            facts["stalled"] = stalled
    if state.failure is not None:
        facts |= {"failed_job": state.failure.job, "reason": state.failure.reason}
    return facts


def _label(facts: dict[str, Any]) -> Text:
    status = str(facts["status"])
    day = str(facts.get("updated_at") or "")[:10]
    detail = {
        "complete": day,
        "failed": str(facts.get("failed_job", "")).rsplit("-", 1)[-1],
        "running": f"mgr {str(facts.get('manager_id', ''))[:6]}",
    }.get(status, "")
    label = Text(f"{status} {detail}".strip(), style=_STYLE.get(status, ""))
    if facts.get("stalled"):
        label.append(" stalled", style="bold magenta")
    return label


def project_table(
    backend: Backend,
    pattern: str,
    *,
    as_json: bool,
    as_csv: bool,
    out: Console,
    stall_after: float | None = None,
) -> int:
    """Prints the sessions a pattern names, by every pipeline; returns 0 (1 when nothing matched).

    A running tracker that has not changed for ``stall_after`` minutes is flagged as stalled."""
    sessions = backend.select_sessions(pattern)
    rows = [
        (
            f"{s.paths.project}/{s.paths.animal}/{s.paths.session}",
            {p: cell(s, p, stall_after) for p in ProcessingPipelines},
        )
        for s in sessions
    ]
    if as_json:
        payload = [
            {"session": name, "pipelines": {p.short_name: f for p, f in facts.items()}}
            for name, facts in rows
        ]
        out.file.write(json.dumps(payload, indent=2) + "\n")
    elif as_csv:
        out.file.write(_csv(rows))
    else:
        out.print(_table(pattern, rows))
    return 0 if rows else 1


def _csv(rows: Sequence[tuple[str, dict[ProcessingPipelines, dict[str, Any]]]]) -> str:
    stream = io.StringIO()
    writer = csv.writer(stream)
    writer.writerow(["session", *(p.short_name for p in ProcessingPipelines)])
    for name, facts in rows:
        writer.writerow([name, *(facts[p]["status"] for p in ProcessingPipelines)])
    return stream.getvalue()


def _table(pattern: str, rows: Sequence[tuple[str, dict[ProcessingPipelines, dict[str, Any]]]]) -> Table:
    table = Table(title=f"{pattern}: {len(rows)} sessions", title_justify="left")
    table.add_column("session")
    for pipeline in ProcessingPipelines:
        table.add_column(pipeline.short_name)
    for name, facts in rows:
        table.add_row(name, *(_label(facts[p]) for p in ProcessingPipelines))
    totals = []
    for pipeline in ProcessingPipelines:
        counts = Counter(str(facts[pipeline]["status"]) for _, facts in rows)
        totals.append(" ".join(f"{n} {s}" for s, n in sorted(counts.items()) if s != "idle") or "-")
    table.add_section()
    table.add_row("totals", *totals)
    return table
