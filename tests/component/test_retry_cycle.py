"""Retries through the polling cycle (fake cluster): one job resubmitted, journaled first, never twice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from fake_cluster import NOW, FakeCluster

from sl_pipelines.core.layout import SessionPaths
from sl_pipelines.core.states import JobState
from sl_pipelines.core.tracker_state import record_completion, record_failure
from sl_pipelines.orchestration.cycle import run_cycle
from sl_pipelines.orchestration.journal import RunJournal
from sl_pipelines.orchestration.pipeline import ProcessingPipeline
from sl_pipelines.vocabulary import ProcessingStatus


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 5
        return self.now


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


def make(cluster: FakeCluster, tmp_path: Path) -> ProcessingPipeline:
    definition = {
        "pipeline": "behavior",
        "defaults": {"memory_gb": 1, "time_limit_minutes": 10},
        "stages": [
            {
                "name": "process",
                "jobs": [
                    {"name": "sibling", "command": "sl-worker demo {tracked} --part a"},
                    {"name": "big", "command": "sl-worker demo {tracked} --part b", "retries": 2},
                ],
            },
            {"name": "after", "jobs": [{"name": "last", "command": "sl-worker demo {tracked} --part c"}]},
        ],
    }
    (tmp_path / "behavior.yaml").write_text(yaml.safe_dump(definition))
    paths = SessionPaths(cluster.storage, cluster.working, "p", "A1", "s1")
    return ProcessingPipeline.create("behavior", [paths], cluster, configs_dir=tmp_path)


def submitted(cluster: FakeCluster, tmp_path: Path) -> tuple[ProcessingPipeline, Clock, str, str]:
    """A run whose stage 1 (a sibling, and a job that may be retried) was submitted."""
    p, clock = make(cluster, tmp_path), Clock()
    sibling, big = (r.name for r in p.resolved.stages[1])
    run_cycle(cluster, [p], clock)
    return p, clock, sibling, big


def test_an_oom_job_is_resubmitted_alone_with_doubled_memory_and_the_run_goes_on(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    p, clock, sibling, big = submitted(cluster, tmp_path)
    cluster.finish(sibling, p.remote_tracker_path)
    cluster.fail(big, JobState.OUT_OF_MEMORY)
    run_cycle(cluster, [p], clock)
    assert cluster.submissions(f"{big}.a2") == 1 and cluster.submissions(sibling) == 1
    assert ("retry", str(p.remote_tracker_path), big) in cluster.log
    journal = RunJournal.load(p.journal.path)
    first, second = journal.attempts[big]
    assert (first["state"], first["memory_gb"], second["attempt"], second["memory_gb"]) == (
        "OUT_OF_MEMORY",
        1.0,
        2,
        2.0,
    )
    assert second["job_id"] == journal.job_ids[big] == cluster.job(f"{big}.a2").job_id
    cluster.finish(f"{big}.a2", p.remote_tracker_path, report=False)
    path = p.remote_tracker_path  # the attempt reports under the job's own name, as {job} says
    cluster.trackers[path] = record_completion(cluster.trackers[path], p.manager_id, big, now=NOW, path=path)
    run_cycle(cluster, [p], clock)
    assert p.stage == 2
    (last,) = (r.name for r in p.resolved.stages[2])
    cluster.finish(last, p.remote_tracker_path)
    run_cycle(cluster, [p], clock)
    assert p.status is ProcessingStatus.SUCCEEDED, p.describe()
    assert p.journal.attempts[big][-1]["state"] == "COMPLETED"


def test_a_restart_after_the_attempt_was_journaled_submits_it_once(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    p, clock, sibling, big = submitted(cluster, tmp_path)
    cluster.run(sibling)
    cluster.fail(big, JobState.TIMEOUT)
    cluster.defer_all = "sbatch said: Unable to contact slurm controller"  # journaled, not submitted
    run_cycle(cluster, [p], clock)
    assert cluster.submissions(f"{big}.a2") == 0
    assert RunJournal.load(p.journal.path).attempts[big][-1]["time_limit_minutes"] == 20
    p.close()  # the manager "crashes"
    cluster.defer_all = ""
    resumed = ProcessingPipeline.resume(RunJournal.load(p.journal.path), cluster)
    run_cycle(cluster, [resumed], clock)
    run_cycle(cluster, [resumed], clock)
    assert cluster.submissions(f"{big}.a2") == 1
    assert resumed.job(big).resources.time_limit_minutes == 20


def test_an_attempt_whose_sbatch_answer_was_lost_is_found_by_its_name(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    p, clock, sibling, big = submitted(cluster, tmp_path)
    cluster.run(sibling)
    cluster.fail(big, JobState.OUT_OF_MEMORY)
    cluster.drop_after = 0  # the retry's sbatch reached Slurm; its answer never came back
    run_cycle(cluster, [p], clock)
    cluster.drop_after = None
    assert big not in p.state.job_ids
    run_cycle(cluster, [p], clock)
    assert cluster.submissions(f"{big}.a2") == 1
    assert p.state.job_ids[big] == cluster.job(f"{big}.a2").job_id


def test_a_failure_the_job_recorded_is_cleared_only_by_the_managers_retry(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    p, clock, sibling, big = submitted(cluster, tmp_path)
    path = p.remote_tracker_path
    cluster.trackers[path] = record_failure(
        cluster.trackers[path], p.manager_id, big, "SIGTERM", now=NOW, path=path
    )
    cluster.run(big)  # still finishing: the manager waits for Slurm's final state
    run_cycle(cluster, [p], clock)
    assert p.is_running and cluster.submissions(f"{big}.a2") == 0 and "final state" in p.state.note
    cluster.finish(sibling, path)  # counted while the run is failed
    cluster.fail(big, JobState.TIMEOUT)
    run_cycle(cluster, [p], clock)
    state = cluster.trackers[path]
    assert state.failure is None and state.retries[0].reason == "SIGTERM"
    assert sibling in state.completed_jobs
    assert cluster.submissions(f"{big}.a2") == 1


def test_a_journal_written_before_retries_existed_still_loads(cluster: FakeCluster, tmp_path: Path) -> None:
    p = make(cluster, tmp_path)
    data = json.loads(p.journal.to_json())
    del data["attempts"]
    old = RunJournal.from_json(json.dumps(data), where="old.json")
    assert old.attempts == {} and old.token == p.journal.token
