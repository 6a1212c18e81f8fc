"""Workflows: the YAML form, and what each session needs next (pure decisions, as tables)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from sl_pipelines.core.tracker_state import IDLE_STATE, record_completion, start_run
from sl_pipelines.core.tracker_text import dump_tracker_text
from sl_pipelines.core.workflow import (
    NextKind,
    SessionNext,
    available_workflows,
    dataset_groups,
    dataset_members,
    load_workflow,
    parse_workflow,
    projects_touched,
    session_next,
    skip_reason,
    tracker_phases,
    workflow_path,
)
from sl_pipelines.errors import ConfigurationError, PipelineDefinitionError
from sl_pipelines.orchestration.pipeline import default_configs_dir
from sl_pipelines.vocabulary import ProcessingPipelines as P
from sl_pipelines.vocabulary import ProcessingStatus as S

LAB_DAILY = parse_workflow(
    {
        "workflow": "lab-daily",
        "steps": ["checksum", "preparation", ["behavior", "suite2p", "video"], "archiving"],
    }
)
WITH_DATASET = parse_workflow({"workflow": "w", "steps": ["checksum", ["behavior", "video"], "forging"]})


def test_the_shipped_lab_daily_workflow_has_its_parallel_step() -> None:
    workflow = load_workflow(workflow_path(default_configs_dir(), "lab-daily"))
    assert workflow.steps == (
        (P.CHECKSUM,),
        (P.PREPARATION,),
        (P.BEHAVIOR, P.SUITE2P, P.VIDEO),
        (P.ARCHIVING,),
    )
    assert workflow.dataset == ()
    assert workflow.describe() == "checksum → preparation → [behavior, suite2p, video] → archiving"
    assert {"lab-daily", "quick"} <= set(available_workflows(default_configs_dir()))


def test_a_dataset_pipeline_as_last_step_is_the_dataset_step() -> None:
    assert WITH_DATASET.steps == ((P.CHECKSUM,), (P.BEHAVIOR, P.VIDEO))
    assert WITH_DATASET.dataset == (P.FORGING,)
    assert WITH_DATASET.describe() == "checksum → [behavior, video] → forging"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1], "must be a mapping"),
        ({"workflow": "w"}, "steps: must be a list"),
        ({"workflow": "w", "steps": ["checksum"], "stepz": 1}, "stepz: unknown key"),
        ({"workflow": "w", "steps": ["behaviour"]}, "steps[0]: Unknown pipeline 'behaviour'"),
        ({"workflow": "w", "steps": ["checksum", ["video", "checksum"]]}, "steps[1]: names a pipeline"),
        ({"workflow": "w", "steps": ["multiday", "checksum"]}, "steps[0]: a dataset pipeline"),
        ({"workflow": "w", "steps": ["checksum", ["forging", "video"]]}, "steps[1]: a dataset pipeline"),
        ({"workflow": "w", "steps": ["checksum", "manifest"]}, "manifest runs by itself"),
        ({"workflow": "w", "steps": [[]]}, "steps[0]: must be a pipeline name"),
    ],
)
def test_a_bad_workflow_is_refused_naming_the_file_and_key(data: object, message: str) -> None:
    with pytest.raises(PipelineDefinitionError) as caught:
        parse_workflow(data, source=Path("/c/workflows/w.yaml"))
    assert message in str(caught.value)
    assert "/c/workflows/w.yaml" in str(caught.value)


def test_a_workflow_name_cannot_leave_the_workflows_folder() -> None:
    with pytest.raises(ConfigurationError, match="plain name"):
        workflow_path(Path("/c"), "../etc/passwd")


def test_a_fresh_session_starts_with_the_first_step() -> None:
    assert session_next(LAB_DAILY, {}) == SessionNext(NextKind.START, (P.CHECKSUM,), 0)


def test_a_parallel_step_starts_all_its_pipelines_at_once() -> None:
    ended = {P.CHECKSUM: S.SUCCEEDED, P.PREPARATION: S.SUCCEEDED}
    decision = session_next(LAB_DAILY, ended, started=(P.CHECKSUM, P.PREPARATION))
    assert decision == SessionNext(NextKind.START, (P.BEHAVIOR, P.SUITE2P, P.VIDEO), 2)


def test_the_next_step_waits_for_every_parallel_pipeline() -> None:
    started = (P.CHECKSUM, P.PREPARATION, P.BEHAVIOR, P.SUITE2P, P.VIDEO)
    ended = {
        P.CHECKSUM: S.SUCCEEDED,
        P.PREPARATION: S.SUCCEEDED,
        P.BEHAVIOR: S.SUCCEEDED,
        P.VIDEO: S.SUCCEEDED,
    }
    decision = session_next(LAB_DAILY, ended, started=started)
    assert decision == SessionNext(NextKind.WAIT, (P.SUITE2P,), 2)
    decision = session_next(LAB_DAILY, {**ended, P.SUITE2P: S.SUCCEEDED}, started=started)
    assert decision == SessionNext(NextKind.START, (P.ARCHIVING,), 3)


def test_a_failure_stops_the_session_once_its_siblings_have_ended() -> None:
    started = (P.CHECKSUM, P.PREPARATION, P.BEHAVIOR, P.SUITE2P, P.VIDEO)
    ended = {P.CHECKSUM: S.SUCCEEDED, P.PREPARATION: S.SUCCEEDED, P.BEHAVIOR: S.FAILED}
    waiting = session_next(LAB_DAILY, ended, started=started)
    assert waiting.kind is NextKind.WAIT and set(waiting.pipelines) == {P.SUITE2P, P.VIDEO}
    assert waiting.reason == "behavior failed"
    stopped = session_next(LAB_DAILY, {**ended, P.SUITE2P: S.SUCCEEDED, P.VIDEO: S.ABORTED}, started=started)
    assert stopped == SessionNext(NextKind.STOPPED, (), 2, "behavior failed, video aborted")


def test_a_failure_of_one_session_does_not_touch_another() -> None:
    failed = session_next(LAB_DAILY, {P.CHECKSUM: S.FAILED}, started=(P.CHECKSUM,))
    other = session_next(LAB_DAILY, {P.CHECKSUM: S.SUCCEEDED}, started=(P.CHECKSUM,))
    assert failed.kind is NextKind.STOPPED and failed.step == 0
    assert other == SessionNext(NextKind.START, (P.PREPARATION,), 1)


def test_every_step_succeeded_is_done() -> None:
    ended = dict.fromkeys(LAB_DAILY.pipelines, S.SUCCEEDED)
    assert session_next(LAB_DAILY, ended, started=LAB_DAILY.pipelines) == SessionNext(NextKind.DONE, (), 4)


def test_steps_already_complete_are_skipped() -> None:
    complete = (P.CHECKSUM, P.PREPARATION, P.SUITE2P, P.VIDEO)
    assert session_next(LAB_DAILY, {}, complete=complete) == SessionNext(NextKind.START, (P.BEHAVIOR,), 2)
    done = session_next(LAB_DAILY, {P.BEHAVIOR: S.SUCCEEDED}, started=(P.BEHAVIOR,), complete=complete)
    assert done == SessionNext(NextKind.START, (P.ARCHIVING,), 3)


def test_a_lost_lock_starts_nothing_more_but_lets_running_pipelines_end() -> None:
    started = (P.CHECKSUM,)
    running = session_next(LAB_DAILY, {}, started=started, stop_reason="lock lost")
    assert running == SessionNext(NextKind.WAIT, (P.CHECKSUM,), 0, "lock lost")
    ended = session_next(LAB_DAILY, {P.CHECKSUM: S.SUCCEEDED}, started=started, stop_reason="lock lost")
    assert ended == SessionNext(NextKind.STOPPED, (), 1, "lock lost")


def test_the_dataset_step_runs_over_the_sessions_that_reached_it_per_project() -> None:
    done, stopped = SessionNext(NextKind.DONE, (), 2), SessionNext(NextKind.STOPPED, (), 1, "behavior failed")
    decisions = {"p/A1/s1": done, "p/A1/s2": stopped, "p/A2/s1": done, "q/B1/s1": done}
    assert dataset_groups(WITH_DATASET, decisions) == (
        (P.FORGING, ("p/A1/s1", "p/A2/s1")),
        (P.FORGING, ("q/B1/s1",)),
    )
    assert dataset_groups(WITH_DATASET, {"p/A1/s2": stopped}) == ()
    assert dataset_groups(LAB_DAILY, decisions) == ()


def test_the_dataset_step_waits_for_every_session() -> None:
    with pytest.raises(ValueError, match="waits"):
        dataset_groups(
            WITH_DATASET, {"p/A1/s1": SessionNext(NextKind.DONE), "p/A1/s2": SessionNext(NextKind.WAIT)}
        )


def test_projects_touched_keep_their_order() -> None:
    assert projects_touched(["b/A/1", "a/A/1", "b/B/2"]) == ("b", "a")


_NOW, _WHERE = "2026-01-05T10:00:00+00:00", PurePosixPath("/t.yaml")
COMPLETE = dump_tracker_text(
    record_completion(start_run(IDLE_STATE, 7, 1, now=_NOW, path=_WHERE), 7, "j", now=_NOW, path=_WHERE)
)


@pytest.mark.parametrize(
    ("phases", "pending", "failed", "why"),
    [
        ({P.CHECKSUM: "complete", P.BEHAVIOR: "complete"}, True, False, "every step already complete"),
        ({P.CHECKSUM: "complete", P.BEHAVIOR: "failed"}, True, False, ""),
        ({P.CHECKSUM: "complete", P.BEHAVIOR: "idle"}, False, True, "no step of it failed"),
        ({P.CHECKSUM: "complete", P.BEHAVIOR: "failed"}, False, True, ""),
        ({P.CHECKSUM: "complete", P.BEHAVIOR: "complete"}, False, False, ""),
    ],
)
def test_pending_and_failed_look_at_every_step(
    phases: dict[P, str], pending: bool, failed: bool, why: str
) -> None:
    assert skip_reason(phases, pending=pending, failed=failed) == why


def test_tracker_phases_read_each_step_tracker() -> None:
    trackers = {P.CHECKSUM.tracker_file.value: COMPLETE, P.ARCHIVING.tracker_file.value: "{{not yaml"}
    phases = tracker_phases(LAB_DAILY, trackers, PurePosixPath("/s/tracking_data"))
    assert phases[P.CHECKSUM] == "complete"
    assert phases[P.ARCHIVING] == "corrupt"
    assert phases[P.BEHAVIOR] == "idle"
    assert set(phases) == set(LAB_DAILY.pipelines)


def test_complete_sessions_come_back_only_for_a_dataset_of_a_project_that_runs() -> None:
    complete = ["p/A1/s1", "q/B1/s1"]
    assert dataset_members(WITH_DATASET, ["p/A1/s2"], complete) == ("p/A1/s1",)
    assert dataset_members(WITH_DATASET, [], complete) == ()
    assert dataset_members(LAB_DAILY, ["p/A1/s2"], complete) == (), "no dataset step: they stay out"
