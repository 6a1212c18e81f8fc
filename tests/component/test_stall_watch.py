"""StallWatch on a real (dry-run) behavior pipeline with a fake clock: when jobs started, how long siblings
took, once-only announcements, and a job queued again counting afresh."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import pytest
from fake_cluster import Clock
from rich.console import Console

from sl_pipelines.adapters.local import LocalBackend
from sl_pipelines.cli.overview import FULL_TABLE_LIMIT, LiveView
from sl_pipelines.core.stalls import Stall, StallKind
from sl_pipelines.core.states import JobState, JobStatus
from sl_pipelines.orchestration.pipeline import ProcessingPipeline
from sl_pipelines.orchestration.stall_watch import StallWatch
from sl_pipelines.workers.demo_data import generate_session


@pytest.fixture
def run(local_backend: LocalBackend) -> ProcessingPipeline:
    generate_session(Path(local_backend.storage_root), "proj", "A1", "S1", planes=1, size_kb=4)
    pipeline = ProcessingPipeline.create("behavior", ["proj/A1/S1"], local_backend, dry_run=True)
    pipeline.state = replace(pipeline.state, stage=1)
    return pipeline


def _set(run: ProcessingPipeline, state: JobState, names: list[str]) -> None:
    """New job states, as a cycle sets them (a new mapping: a run's job states are never changed in place)."""
    run.job_states = {**run.job_states, **{name: JobStatus("1", name, state) for name in names}}


def test_a_job_far_slower_than_its_siblings_is_told_once(run: ProcessingPipeline) -> None:
    clock = Clock()
    watch = StallWatch({"sibling_minimum_minutes": 1}, clock=clock)
    names = list(run.spec.stages[1])
    _set(run, JobState.RUNNING, names)
    assert watch.observe([run]) == []
    clock.now = 60
    _set(run, JobState.COMPLETED, names[:-1])
    assert watch.observe([run]) == []
    clock.now = 179
    assert watch.observe([run]) == []
    clock.now = 181
    (fresh,) = watch.observe([run])
    assert fresh[0] is run
    assert (fresh[1].kind, fresh[1].job) == (StallKind.SIBLINGS, "encoder_microcontroller")
    assert "3.0 times the 60 s its 6 finished sibling(s) took" in fresh[1].detail
    clock.now = 300
    assert watch.observe([run]) == [], "told once"
    assert [s.kind for s in watch.current[run.resolved.token]] == [StallKind.SIBLINGS], "still flagged"
    _set(run, JobState.UNKNOWN, names[-1:])  # Slurm silent for a cycle: nothing is reset
    watch.observe([run])
    _set(run, JobState.RUNNING, names[-1:])
    assert watch.current == {} and watch.observe([run]) == []
    assert watch.current[run.resolved.token]
    _set(run, JobState.PENDING, names[-1:])  # queued again (requeue, retry): counts afresh
    watch.observe([run])
    clock.now = 310
    _set(run, JobState.RUNNING, names[-1:])
    watch.observe([run])
    assert watch.current == {}


def test_the_definition_and_the_command_line_set_the_thresholds(run: ProcessingPipeline) -> None:
    clock = Clock()
    run.resolved = replace(
        run.resolved, definition=replace(run.resolved.definition, stalls={"limit_fraction": 0.5})
    )
    names = list(run.spec.stages[1])
    _set(run, JobState.RUNNING, names[:1])
    from_yaml = StallWatch(clock=clock)
    from_flags = StallWatch({"limit_fraction": 0.9}, clock=clock)
    assert from_yaml.thresholds(run).limit_fraction == 0.5
    assert from_flags.thresholds(run).limit_fraction == 0.9
    from_yaml.observe([run])
    from_flags.observe([run])
    clock.now = 0.6 * 90 * 60  # behavior's jobs have 90 minutes
    assert [s.kind for _, s in from_yaml.observe([run])] == [StallKind.TIME_LIMIT]
    assert from_flags.observe([run]) == []


def test_a_wrong_threshold_fails_at_once() -> None:
    with pytest.raises(ValueError, match="unknown stall threshold 'limit'"):
        StallWatch({"limit": 0.5})


def test_the_many_pipelines_overview_lists_the_stalled_ones(local_backend: LocalBackend) -> None:
    generate_session(Path(local_backend.storage_root), "proj", "A1", "S1", planes=1, size_kb=4)
    runs = [
        ProcessingPipeline.create("checksum", ["proj/A1/S1"], local_backend, dry_run=True)
        for _ in range(FULL_TABLE_LIMIT + 1)
    ]
    stall = Stall(StallKind.TIME_LIMIT, "checksum", "checksum has run 50 min, 83% of its 60 min time limit")
    out = Console(file=io.StringIO(), width=250)
    out.print(LiveView().render(runs, stalls={runs[3].resolved.token: (stall,)}))
    text = out.file.getvalue()  # type: ignore[attr-defined]
    assert "1 stalled" in text
    assert "stalled: checksum has run 50 min, 83% of its 60 min time limit" in text
    out = Console(file=io.StringIO(), width=250)
    out.print(LiveView().render(runs, stalls={}))
    assert "stalled" not in out.file.getvalue()  # type: ignore[attr-defined]
