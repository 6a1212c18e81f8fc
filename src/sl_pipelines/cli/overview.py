"""The view of many pipelines: totals per status and per stage, what failed and what just changed, in full.

Up to :data:`FULL_TABLE_LIMIT` pipelines the live view is the table of every pipeline, as it always was.
Beyond, a table of a thousand rows would scroll past the terminal on every refresh, so the view shows:

* one line of totals per status,
* a table of totals per stage (pipelines per status, and the jobs of the running ones),
* the failed (and aborted) pipelines in full, most recent first, and the most recently changed ones,
* one line that sums up all the others.

The full table stays in ``sl-process --json``. :class:`LiveView` remembers when each pipeline last
changed, between refreshes of the live view.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Hashable, Sequence

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from sl_pipelines.cli.render import (
    PIPELINE_COLUMNS,
    STATUS_STYLE,
    Stalls,
    job_counts,
    pipeline_row,
    pipelines_table,
    progress_caption,
    stage_label,
    stall_text,
)
from sl_pipelines.orchestration.manager import Observer, PipelineManager
from sl_pipelines.orchestration.pipeline import ProcessingPipeline
from sl_pipelines.vocabulary import ProcessingStatus

FULL_TABLE_LIMIT = 20
"""Up to this many pipelines, every pipeline has its row in the view."""

SHOWN_FAILED = 5
"""Failed or aborted pipelines shown in full (the most recent); the others are counted."""

SHOWN_RECENT = 5
"""Recently changed pipelines shown in full, besides the failed ones."""

_ENDED_BADLY = (ProcessingStatus.FAILED, ProcessingStatus.ABORTED)
_STATUS_ORDER = tuple(ProcessingStatus)


Counts = dict[int, Counter[str]]
"""Each pipeline's jobs by state label (:func:`job_counts`), by ``id`` of the pipeline."""


def _counts(pipelines: Sequence[ProcessingPipeline]) -> Counts:
    return {id(p): job_counts(p) for p in pipelines}


class LiveView:
    """Renders the pipelines for the live view, noting between refreshes when each one last changed.

    Args:
        clock: monotonic seconds (tests pass a fake one).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._seen: dict[int, tuple[Hashable, float]] = {}

    def render(
        self,
        pipelines: Sequence[ProcessingPipeline],
        *,
        title: str = "",
        caption: str = "",
        stalls: Stalls | None = None,
    ) -> RenderableType:
        """Every pipeline's row up to :data:`FULL_TABLE_LIMIT` pipelines, else the overview; stalled runs
        are flagged in both."""
        if len(pipelines) <= FULL_TABLE_LIMIT:
            return pipelines_table(pipelines, title=title, caption=caption, stalls=stalls)
        counts = _counts(pipelines)
        recent = self.changed_order(pipelines, counts)
        return pipelines_overview(
            pipelines, recent, title=title, caption=caption, counts=counts, stalls=stalls
        )

    def changed_order(
        self, pipelines: Sequence[ProcessingPipeline], counts: Counts | None = None
    ) -> list[ProcessingPipeline]:
        """The pipelines that changed since the view first saw them, the most recent first."""
        counts = counts if counts is not None else _counts(pipelines)
        now = self._clock()
        changed: list[tuple[float, int, ProcessingPipeline]] = []
        for index, pipeline in enumerate(pipelines):
            mark = (pipeline.status, pipeline.stage, tuple(sorted(counts[id(pipeline)].items())))
            seen = self._seen.get(id(pipeline))
            if seen is None:
                self._seen[id(pipeline)] = (mark, float("-inf"))
                continue
            if seen[0] != mark:
                seen = self._seen[id(pipeline)] = (mark, now)
            if seen[1] > float("-inf"):
                changed.append((seen[1], -index, pipeline))
        return [pipeline for *_, pipeline in sorted(changed, key=lambda item: item[:2], reverse=True)]


def pipelines_overview(
    pipelines: Sequence[ProcessingPipeline],
    recent: Sequence[ProcessingPipeline] = (),
    *,
    title: str = "",
    caption: str = "",
    counts: Counts | None = None,
    stalls: Stalls | None = None,
) -> RenderableType:
    """Totals per status and stage, the failed, stalled and ``recent`` pipelines in full, the rest in a line.

    Args:
        pipelines: every pipeline.
        recent: pipelines that changed, the most recent first (see :class:`LiveView`).
        title: a title above it all.
        caption: a line under it all (the progress of the run).
        counts: each pipeline's job counts, when the caller has them already.
        stalls: the stalled runs' stalls by run token (see :class:`~sl_pipelines.core.stalls.Stall`).
    """
    parts: list[RenderableType] = []
    if title:
        parts.append(Text(title, style="bold"))
    parts += [_status_line(pipelines), _stage_table(pipelines, counts or _counts(pipelines))]
    order = {id(p): rank for rank, p in enumerate(recent)}
    failed = sorted(
        (p for p in pipelines if p.status in _ENDED_BADLY), key=lambda p: order.get(id(p), len(order))
    )
    shown_failed = failed[:SHOWN_FAILED]
    if failed:
        more = f" (the {len(shown_failed)} most recent)" if len(failed) > len(shown_failed) else ""
        parts.append(_rows_table(f"{len(failed):,} failed or aborted{more}", shown_failed, reasons=True))
    shown = {id(p) for p in shown_failed}
    stalled = [p for p in pipelines if (stalls or {}).get(p.resolved.token) and id(p) not in shown]
    if stalls and stalled:
        parts.append(_stalled_table(stalled[:SHOWN_FAILED], len(stalled), stalls))
        shown |= {id(p) for p in stalled[:SHOWN_FAILED]}
    shown_recent = [p for p in recent if id(p) not in shown][:SHOWN_RECENT]
    if shown_recent:
        parts.append(_rows_table("most recently changed", shown_recent, reasons=False))
    shown |= {id(p) for p in shown_recent}
    rest = [p for p in pipelines if id(p) not in shown]
    if rest and shown:
        parts.append(Text(f"{len(rest):,} other pipelines: {_status_counts(rest)}"))
    if caption:
        parts.append(Text(caption))
    return Group(*parts)


def _status_counts(pipelines: Sequence[ProcessingPipeline]) -> str:
    counts = Counter(p.status for p in pipelines)
    return " · ".join(f"{counts[s]:,} {s.name.lower()}" for s in _STATUS_ORDER if counts[s])


def _status_line(pipelines: Sequence[ProcessingPipeline]) -> Text:
    kinds = sorted({p.pipeline.short_name for p in pipelines})
    return Text(f"{len(pipelines):,} {'/'.join(kinds)} pipelines: {_status_counts(pipelines)}", style="bold")


def _stage_table(pipelines: Sequence[ProcessingPipeline], counts: Counts) -> Table:
    """One row per pipeline kind and stage: pipelines per status, and the jobs of those running."""
    table = Table(expand=False)
    table.add_column("stage")
    for status in _STATUS_ORDER:
        table.add_column(status.name.lower(), justify="right", style=STATUS_STYLE[status])
    table.add_column("jobs of the running pipelines")
    groups: dict[tuple[str, int], list[ProcessingPipeline]] = {}
    for p in pipelines:
        groups.setdefault((p.pipeline.short_name, p.stage), []).append(p)
    kinds = {kind for kind, _ in groups}
    for (kind, _), members in sorted(groups.items()):
        label = stage_label(members[0]) if members[0].stage else "0 not submitted"
        statuses = Counter(p.status for p in members)
        jobs: Counter[str] = Counter()
        for p in members:
            if p.is_running:
                jobs.update(counts[id(p)])
        cells = [f"{statuses[s]:,}" if statuses[s] else "" for s in _STATUS_ORDER]
        jobs_text = ", ".join(f"{n:,} {label}" for label, n in sorted(jobs.items()))
        table.add_row(f"{kind} {label}" if len(kinds) > 1 else label, *cells, jobs_text)
    return table


def _rows_table(title: str, pipelines: Sequence[ProcessingPipeline], *, reasons: bool) -> Table:
    table = Table(title=title, title_justify="left", expand=False)
    for column in (*PIPELINE_COLUMNS, *(("reason",) if reasons else ())):
        table.add_column(column)
    for p in pipelines:
        reason = [p.failure.reason if p.failure is not None else ""] if reasons else []
        table.add_row(*pipeline_row(p), *reason)
    return table


def _stalled_table(shown: Sequence[ProcessingPipeline], total: int, stalls: Stalls) -> Table:
    more = f" ({len(shown)} shown)" if total > len(shown) else ""
    table = Table(title=f"{total:,} stalled{more}", title_justify="left", expand=False)
    for column in (*PIPELINE_COLUMNS, "stalled"):
        table.add_column(column)
    for p in shown:
        table.add_row(*pipeline_row(p), stall_text(stalls.get(p.resolved.token, ())))
    return table


def drive_with_live_view(
    console: Console,
    manager: PipelineManager,
    drive: Callable[[Observer, Callable[[float], None]], object],
    *,
    prefix: str = "",
) -> None:
    """Runs ``drive(observer, sleep)`` (the manager's loop) under the live view of its pipelines, the
    elapsed time moving between cycles; ``prefix`` leads the caption."""
    started, live_view = time.monotonic(), LiveView()

    def view(m: PipelineManager) -> RenderableType:  # many pipelines: totals, failures, changes
        caption = prefix + progress_caption(m.cycles, time.monotonic() - started, m.pipelines)
        return live_view.render(m.pipelines, caption=caption, stalls=m.stalls.current)

    with Live(view(manager), console=console, refresh_per_second=4, transient=True) as live:

        def wait(seconds: float) -> None:
            deadline = time.monotonic() + seconds
            while (left := deadline - time.monotonic()) > 0:
                time.sleep(min(0.5, left))
                live.update(view(manager))

        drive(lambda m: live.update(view(m)), wait)
