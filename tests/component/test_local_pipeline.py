"""End to end on the embedded local backend: real processes, real files, real trackers."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml

from sl_pipelines.adapters.local import LocalBackend
from sl_pipelines.adapters.tracker_store import ProcessingTracker
from sl_pipelines.core.seams import ProbeRequest
from sl_pipelines.core.states import JobState
from sl_pipelines.errors import HostUnreachableError, RunLockedError, SchedulerError, SessionNotFoundError
from sl_pipelines.orchestration.journal import RunJournal
from sl_pipelines.orchestration.manager import PipelineManager
from sl_pipelines.orchestration.pipeline import ProcessingPipeline, default_configs_dir
from sl_pipelines.vocabulary import ProcessingStatus
from sl_pipelines.workers.demo_data import generate_session

HOSTILE = "-a b;rm -rf ~ $(touch pwned)"


def _session(backend: LocalBackend, name: str = "S1", planes: int = 3) -> str:
    generate_session(Path(backend.storage_root), "proj", "A1", name, planes=planes, size_kb=8)
    return f"proj/A1/{name}"


def _run(backend: LocalBackend, pipelines: list[ProcessingPipeline], timeout: float = 90) -> None:
    manager = PipelineManager(backend, pipelines, poll_interval=0.2, max_interval=0.5)
    deadline = time.monotonic() + timeout
    while not manager.finished:
        assert time.monotonic() < deadline, [p.describe() for p in pipelines]
        manager.cycle()
        time.sleep(0.2)


def _submitted_names(backend: LocalBackend) -> list[str]:
    """The job of every job the local scheduler was given (an array task counts as its own job)."""
    records = [json.loads(p.read_text()) for p in (Path(backend.root) / ".sl_local" / "jobs").glob("*.json")]
    return [Path(record["script"]).stem for record in records]


def _configs_with(tmp_path: Path, pipeline: str, edit: dict[str, str]) -> Path:
    """A copy of the shipped configs where the named jobs' commands get extra arguments."""
    folder = tmp_path / "configs"
    folder.mkdir(exist_ok=True)
    data = yaml.safe_load((default_configs_dir() / f"{pipeline}.yaml").read_text())
    for stage in data["stages"]:
        for job in stage["jobs"]:
            if job["name"] in edit:
                job["command"] += " " + edit[job["name"]]
    (folder / f"{pipeline}.yaml").write_text(yaml.safe_dump(data))
    return folder


def test_behavior_runs_seven_parallel_jobs_and_cleans_up(local_backend: LocalBackend) -> None:
    spec = _session(local_backend)
    pipeline = ProcessingPipeline.create("behavior", [spec], local_backend)
    _run(local_backend, [pipeline])
    assert pipeline.status is ProcessingStatus.SUCCEEDED, pipeline.describe()
    tracker = ProcessingTracker(Path(pipeline.remote_tracker_path)).read()
    assert tracker.is_complete
    assert len(tracker.completed_jobs) == 7
    outputs = Path(pipeline.resolved.session.processed_data) / "behavior"
    assert sorted(p.name for p in outputs.iterdir()) == sorted(
        ["runtime", "face_camera", "left_camera", "right_camera", "actor", "sensor", "encoder"]
    )
    folder = Path(pipeline.resolved.jobs_folder)
    assert [p.name for p in folder.iterdir()] == ["run.json"], "job folders go, the run's record stays"
    record = RunJournal.load(folder / "run.json")
    assert (record.status, record.token, record.job_ids) == (
        "SUCCEEDED",
        pipeline.resolved.token,
        pipeline.state.job_ids,
    )
    assert "pipeline: behavior" in record.definition
    assert sorted(_submitted_names(local_backend)) == sorted(r.name for r in pipeline.resolved.all_jobs())


def test_suite2p_runs_three_stages_with_one_job_per_plane(local_backend: LocalBackend) -> None:
    spec = _session(local_backend, planes=4)
    pipeline = ProcessingPipeline.create("suite2p", [spec], local_backend, keep_job_logs=True)
    assert [len(pipeline.jobs[s]) for s in (1, 2, 3)] == [1, 4, 1]
    _run(local_backend, [pipeline])
    assert pipeline.status is ProcessingStatus.SUCCEEDED, pipeline.describe()
    assert Path(pipeline.resolved.jobs_folder).is_dir()


def test_failing_job_fails_the_pipeline_with_reason_and_stderr_and_stops_there(
    local_backend: LocalBackend, tmp_path: Path
) -> None:
    spec = _session(local_backend)
    configs = _configs_with(tmp_path, "suite2p", {"binarize": "--fail 'binarization exploded'"})
    pipeline = ProcessingPipeline.create("suite2p", [spec], local_backend, configs_dir=configs)
    _run(local_backend, [pipeline])
    assert pipeline.status is ProcessingStatus.FAILED
    assert pipeline.failure is not None
    assert "binarization exploded" in pipeline.failure.reason
    assert pipeline.failure.job == pipeline.resolved.stages[1][0].name
    assert "binarization exploded" in pipeline.failure.stderr_tail
    assert all("-2-" not in name and "-3-" not in name for name in _submitted_names(local_backend))
    assert ProcessingTracker(Path(pipeline.remote_tracker_path)).read().encountered_error


def test_job_that_dies_without_touching_the_tracker_fails_the_pipeline(
    local_backend: LocalBackend, tmp_path: Path
) -> None:
    spec = _session(local_backend)
    configs = _configs_with(tmp_path, "suite2p", {"binarize": "--sleep-before-start 30"})
    pipeline = ProcessingPipeline.create("suite2p", [spec], local_backend, configs_dir=configs)
    pipeline.runtime_cycle()
    (job_id,) = pipeline.journal.job_ids.values()
    time.sleep(0.5)
    local_backend.cancel([job_id])
    _run(local_backend, [pipeline])
    assert pipeline.status is ProcessingStatus.FAILED
    assert pipeline.failure is not None
    assert "CANCELLED" in pipeline.failure.reason
    tracker = ProcessingTracker(Path(pipeline.remote_tracker_path)).read()
    assert tracker.encountered_error, "the manager records the silent death in the tracker"
    assert not tracker.is_running


def test_job_that_exits_without_reporting_fails_rather_than_advancing(
    local_backend: LocalBackend, tmp_path: Path
) -> None:
    spec = _session(local_backend)
    configs = _configs_with(tmp_path, "suite2p", {"binarize": "--no-report"})
    pipeline = ProcessingPipeline.create("suite2p", [spec], local_backend, configs_dir=configs)
    _run(local_backend, [pipeline])
    assert pipeline.status is ProcessingStatus.FAILED
    assert pipeline.failure is not None
    assert "without reporting" in pipeline.failure.reason
    assert pipeline.stage == 1


def test_second_manager_is_refused_with_the_owner_id(local_backend: LocalBackend, tmp_path: Path) -> None:
    spec = _session(local_backend)
    configs = _configs_with(tmp_path, "suite2p", {"binarize": "--seconds 3"})
    first = ProcessingPipeline.create("suite2p", [spec], local_backend, configs_dir=configs)
    first.runtime_cycle()
    second = ProcessingPipeline.create("suite2p", [spec], local_backend, configs_dir=configs)
    second.runtime_cycle()
    assert second.status is ProcessingStatus.FAILED
    assert second.failure is not None
    assert str(first.manager_id) in second.failure.reason
    assert second.journal.job_ids == {}
    _run(local_backend, [first])
    assert first.status is ProcessingStatus.SUCCEEDED


def test_crashed_manager_resumes_without_submitting_twice(local_backend: LocalBackend) -> None:
    spec = _session(local_backend)
    pipeline = ProcessingPipeline.create("suite2p", [spec], local_backend)
    while pipeline.stage < 2:
        pipeline.runtime_cycle()
        time.sleep(0.2)
    journal_path = pipeline.journal.path
    pipeline.close()  # the manager "crashes": only the journal and the running jobs remain
    del pipeline
    resumed = ProcessingPipeline.resume(RunJournal.load(journal_path), local_backend)
    _run(local_backend, [resumed])
    assert resumed.status is ProcessingStatus.SUCCEEDED, resumed.describe()
    names = _submitted_names(local_backend)
    assert len(names) == len(set(names)) == 5


def test_journal_written_before_submission_lets_a_restart_adopt_existing_jobs(
    local_backend: LocalBackend,
) -> None:
    spec = _session(local_backend)
    pipeline = ProcessingPipeline.create("behavior", [spec], local_backend)
    pipeline.runtime_cycle()
    # Simulate a crash between sbatch and recording the ids: the journal knows the stage, not the ids.
    pipeline.journal.save(job_ids={})
    pipeline.close()
    resumed = ProcessingPipeline.resume(RunJournal.load(pipeline.journal.path), local_backend)
    _run(local_backend, [resumed])
    assert resumed.status is ProcessingStatus.SUCCEEDED
    assert len(_submitted_names(local_backend)) == 7


def test_hostile_session_name_is_just_a_name(local_backend: LocalBackend, tmp_path: Path) -> None:
    spec = _session(local_backend, HOSTILE)
    pipeline = ProcessingPipeline.create("checksum", [spec], local_backend)
    _run(local_backend, [pipeline])
    assert pipeline.status is ProcessingStatus.SUCCEEDED, pipeline.describe()
    assert not (tmp_path / "pwned").exists()
    assert not Path("pwned").exists()


def test_corrupt_tracker_fails_with_the_file_named(local_backend: LocalBackend) -> None:
    spec = _session(local_backend)
    pipeline = ProcessingPipeline.create("checksum", [spec], local_backend)
    tracker = Path(pipeline.remote_tracker_path)
    tracker.parent.mkdir(parents=True, exist_ok=True)
    tracker.write_text("manager_id: [unclosed\n")
    pipeline.runtime_cycle()
    assert pipeline.status is ProcessingStatus.FAILED
    assert pipeline.failure is not None
    assert str(tracker) in pipeline.failure.reason
    assert tracker.read_text() == "manager_id: [unclosed\n", "a corrupt tracker is never overwritten"
    assert _submitted_names(local_backend) == []


def test_unknown_session_is_a_clear_error(local_backend: LocalBackend) -> None:
    with pytest.raises(SessionNotFoundError, match="'nope' was not found"):
        ProcessingPipeline.create("behavior", ["nope"], local_backend)


def test_many_pipelines_share_one_probe_per_cycle(local_backend: LocalBackend) -> None:
    specs = [_session(local_backend, f"S{i}") for i in range(4)]
    pipelines = [ProcessingPipeline.create("checksum", [s], local_backend) for s in specs]
    probes: list[ProbeRequest] = []
    original = local_backend.probe

    def counting(request: ProbeRequest):  # type: ignore[no-untyped-def]
        probes.append(request)
        return original(request)

    local_backend.probe = counting  # type: ignore[method-assign]
    manager = PipelineManager(local_backend, pipelines, max_parallel=4)
    manager.cycle()
    assert len(probes) == 1
    assert len(probes[0].tracker_paths) == 4
    deadline = time.monotonic() + 60
    while not manager.finished and time.monotonic() < deadline:
        manager.cycle()
        time.sleep(0.2)
    assert all(p.status is ProcessingStatus.SUCCEEDED for p in pipelines)
    assert len(probes) == manager.cycles + 1, "one probe per cycle, and one for what the last jobs used"
    states = {s.state for s in local_backend.probe(ProbeRequest(job_ids=("1", "2", "3", "4"))).jobs}
    assert states == {JobState.COMPLETED}


def test_two_runs_of_one_session_in_one_manager_only_the_first_claims(local_backend: LocalBackend) -> None:
    spec = _session(local_backend)
    first = ProcessingPipeline.create("checksum", [spec], local_backend)
    second = ProcessingPipeline.create("checksum", [spec], local_backend)
    PipelineManager(local_backend, [first, second]).cycle()
    assert first.stage == 1
    assert second.status is ProcessingStatus.FAILED
    assert second.failure is not None
    assert str(first.manager_id) in second.failure.reason
    _run(local_backend, [first])
    assert first.status is ProcessingStatus.SUCCEEDED


class _FlakyBackend:
    """The local backend, except that its first probes fail as an unreachable server would."""

    def __init__(self, inner: LocalBackend, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def probe(self, request: ProbeRequest):  # type: ignore[no-untyped-def]
        if self.failures > 0:
            self.failures -= 1
            raise HostUnreachableError("Cannot reach the server (test)", host="test")
        return self.inner.probe(request)


def test_manager_rides_out_an_unreachable_server_and_gives_up_after_its_patience(
    local_backend: LocalBackend,
) -> None:
    spec = _session(local_backend)
    flaky = _FlakyBackend(local_backend, failures=3)
    pipeline = ProcessingPipeline.create("checksum", [spec], local_backend)
    manager = PipelineManager(flaky, [pipeline], poll_interval=0.05, max_interval=0.1, patience=60)  # type: ignore[arg-type]
    assert manager.run()
    assert pipeline.status is ProcessingStatus.SUCCEEDED

    down = _FlakyBackend(local_backend, failures=100)
    stuck = ProcessingPipeline.create("checksum", [spec], local_backend)
    clock = iter(range(0, 1000, 10))  # ten seconds pass per cycle
    manager = PipelineManager(down, [stuck], poll_interval=0.01, patience=25, clock=lambda: next(clock))  # type: ignore[arg-type]
    with pytest.raises(SchedulerError, match="has not answered for 30 s") as caught:
        manager.run()
    assert isinstance(caught.value.__cause__, HostUnreachableError)
    assert down.failures == 96
    assert stuck.is_running and stuck.stage == 0, "nothing was decided without the server's answer"


def test_two_managers_never_drive_one_run(local_backend: LocalBackend) -> None:
    spec = _session(local_backend)
    pipeline = ProcessingPipeline.create("checksum", [spec], local_backend)
    pipeline.runtime_cycle()
    with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
        ProcessingPipeline.resume(RunJournal.load(pipeline.journal.path), local_backend)
    pipeline.close()
    resumed = ProcessingPipeline.resume(RunJournal.load(pipeline.journal.path), local_backend)
    _run(local_backend, [resumed])
    assert resumed.status is ProcessingStatus.SUCCEEDED
    assert len(_submitted_names(local_backend)) == 1
