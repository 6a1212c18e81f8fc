"""The live view of ``sl-process``: every pipeline's row for a few pipelines; for a thousand, totals per
status and stage, the failed and the most recently changed pipelines in full, and the rest in one line."""

from __future__ import annotations

import io
import re

from fake_cluster import FakeCluster
from rich.console import Console, RenderableType

from sl_pipelines.cli.overview import FULL_TABLE_LIMIT, SHOWN_RECENT, LiveView
from sl_pipelines.cli.render import pipelines_table
from sl_pipelines.core.layout import SessionPaths
from sl_pipelines.orchestration.cycle import run_cycle
from sl_pipelines.orchestration.pipeline import ProcessingPipeline


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _text(renderable: RenderableType) -> str:
    console = Console(record=True, width=120, color_system=None, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def _pipelines(cluster: FakeCluster, count: int) -> list[ProcessingPipeline]:
    return [
        ProcessingPipeline.create(
            "behavior",
            [SessionPaths(cluster.storage, cluster.working, "proj", f"A{i // 100}", f"s{i:04d}")],
            cluster,
            dry_run=True,
        )
        for i in range(count)
    ]


def _names(pipeline: ProcessingPipeline) -> list[str]:
    return [r.name for r in pipeline.resolved.stages[1]]


def test_a_few_pipelines_keep_one_row_each_as_before() -> None:
    cluster = FakeCluster()
    pipelines = _pipelines(cluster, 5)
    run_cycle(cluster, pipelines)
    cluster.run(*_names(pipelines[0]))
    cluster.fail(_names(pipelines[1])[2])
    run_cycle(cluster, pipelines)
    text = _text(LiveView().render(pipelines, caption="2 of 5 finished"))
    assert text == _text(pipelines_table(pipelines, caption="2 of 5 finished"))
    assert re.search(r"pipeline\s+┃\s+session\s+┃\s+stage\s+┃\s+jobs\s+┃\s+status", text)
    assert re.search(r"proj/A0/s0000\s+│ 1/1 process │ 7 running\s+│ RUNNING", text)
    assert re.search(r"proj/A0/s0001 .* FAILED", text)
    assert len(text.splitlines()) == 5 + 5  # header, rules, one row each, the caption
    assert "other pipelines" not in text


def test_the_view_switches_to_the_overview_above_the_limit() -> None:
    cluster = FakeCluster()
    pipelines = _pipelines(cluster, FULL_TABLE_LIMIT + 1)
    assert "proj/A0/s0020" in _text(LiveView().render(pipelines[: FULL_TABLE_LIMIT - 1] + pipelines[-1:]))
    text = _text(LiveView().render(pipelines))
    assert text.startswith(f"{FULL_TABLE_LIMIT + 1} behavior pipelines: {FULL_TABLE_LIMIT + 1} running\n")
    assert "proj/A0/s0020" not in text
    assert "other pipelines" not in text  # nothing listed: the totals say it all


def test_a_thousand_pipelines_fit_on_one_screen_with_totals_failures_and_changes() -> None:
    cluster, clock = FakeCluster(), Clock()
    pipelines = _pipelines(cluster, 1000)
    view = LiveView(clock)
    run_cycle(cluster, pipelines, clock)
    view.render(pipelines)  # the view first sees them all submitted, nothing running yet
    for p in pipelines[:600]:
        cluster.run(*_names(p))
    for p in pipelines[600:900]:
        for name in _names(p):
            cluster.finish(name, p.remote_tracker_path)
    for p in pipelines[900:903]:
        cluster.fail(_names(p)[0])
    clock.now = 10.0
    run_cycle(cluster, pipelines, clock)
    view.render(pipelines)
    for name in _names(pipelines[42]):  # later, one running pipeline finishes
        cluster.finish(name, pipelines[42].remote_tracker_path)
    clock.now = 20.0
    run_cycle(cluster, pipelines, clock)

    text = _text(view.render(pipelines, caption="304 of 1,000 finished · cycle 3"))
    lines = text.splitlines()
    assert len(lines) <= 40, text
    assert "1,000 behavior pipelines: 696 running · 301 succeeded · 3 failed" in lines[0]
    stage_row = next(line for line in lines if "1/1 process" in line and "│" in line)
    assert re.search(r"1/1 process\s+│\s+696\s+│\s+301\s+│\s+3\s+│\s+│ 679 pending, 4,193 running", stage_row)
    assert "3 failed or aborted" in text
    for p in pipelines[900:903]:
        row = next(line for line in lines if f"proj/A9/{p.session}" in line)
        assert "FAILED" in row and _names(p)[0] in text
    recent = [line for line in text.split("most recently changed")[1].splitlines() if "proj/" in line]
    assert len(recent) == SHOWN_RECENT
    assert "proj/A0/s0042" in recent[0] and "SUCCEEDED" in recent[0]  # the latest change first
    assert f"{1000 - 3 - SHOWN_RECENT:,} other pipelines: " in text
    assert "proj/A5/s0500" not in text
    assert lines[-1] == "304 of 1,000 finished · cycle 3"
