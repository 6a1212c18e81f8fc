"""Pipelines end to end on the real testbed: real SSH, real Slurm, real files, real trackers."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pytest
import yaml
from conftest import Testbed
from pipeline_helpers import configs_with, generate, jobs_in_slurm, run_to_end, tracker_of

from sl_pipelines.adapters.locks import LockKind
from sl_pipelines.adapters.profiles import ServerProfile, save_profile
from sl_pipelines.adapters.server import Server
from sl_pipelines.errors import SessionNotFoundError
from sl_pipelines.orchestration.journal import RunJournal, runs_dir
from sl_pipelines.orchestration.manager import PipelineManager
from sl_pipelines.orchestration.pipeline import ProcessingPipeline, default_configs_dir
from sl_pipelines.orchestration.sessions import find_sessions
from sl_pipelines.vocabulary import ProcessingStatus

HOSTILE = "day 1;$(touch pwned) `id`"

pytestmark = pytest.mark.usefixtures("private_data_dir")


def test_session_lifecycle_on_real_slurm(slurm_server: Server, project: str) -> None:
    """checksum → preparation → behavior (7 parallel jobs) → suite2p (3 stages) → archiving, hostile name."""
    spec = generate(slurm_server, project, HOSTILE, planes=3)
    for name in ("checksum", "preparation", "behavior", "suite2p"):
        pipeline = ProcessingPipeline.create(name, [spec], slurm_server)
        run_to_end(slurm_server, [pipeline])
        assert pipeline.status is ProcessingStatus.SUCCEEDED, pipeline.describe()
        assert tracker_of(slurm_server, pipeline).is_complete
        remaining = slurm_server.list_dir(pipeline.resolved.jobs_folder)
        assert remaining == ("run.json",), "job folders are removed on success, the run's record stays"
    session = pipeline.resolved.session
    assert len(pipeline.jobs[2]) == 3
    outputs = set(slurm_server.list_dir(session.processed_data / "behavior"))
    assert {"runtime", "face_camera", "encoder"} <= outputs
    assert "combine" in slurm_server.list_dir(session.processed_data / "suite2p")
    archive = ProcessingPipeline.create("archiving", [spec], slurm_server)
    run_to_end(slurm_server, [archive])
    assert archive.status is ProcessingStatus.SUCCEEDED, archive.describe()
    assert "behavior" in slurm_server.list_dir(session.archived_processed_data)
    assert not slurm_server.exists(session.processed_data), "the working copy goes only after verification"
    assert slurm_server.run("ls ~/pwned 2>/dev/null; ls pwned 2>/dev/null").stdout == ""


def test_failing_job_fails_with_reason_and_stderr_tail_and_next_stage_is_not_submitted(
    make_server: Callable[..., Server], project: str, tmp_path: Path
) -> None:
    server = make_server("acct")
    spec = generate(server, project, "s1")
    configs = configs_with(tmp_path, "suite2p", {"binarize": "--fail 'disk on fire' --exit-code 3"})
    pipeline = ProcessingPipeline.create("suite2p", [spec], server, configs_dir=configs)
    run_to_end(server, [pipeline])
    assert pipeline.status is ProcessingStatus.FAILED
    assert pipeline.failure is not None
    assert pipeline.failure.job == pipeline.resolved.stages[1][0].name
    assert "disk on fire" in pipeline.failure.reason
    assert "disk on fire" in pipeline.failure.stderr_tail
    assert jobs_in_slurm(server, pipeline.resolved, stages=(2, 3)) == []
    assert tracker_of(server, pipeline).encountered_error
    assert server.exists(pipeline.resolved.jobs_folder), "logs are kept on failure"


@pytest.mark.slow
def test_job_killed_by_its_time_limit_before_touching_the_tracker_fails_as_timeout(
    make_server: Callable[..., Server], project: str, tmp_path: Path
) -> None:
    server = make_server("acct")
    spec = generate(server, project, "s1")
    configs = configs_with(
        tmp_path, "suite2p", {"binarize": "--sleep-before-start 600"}, time_limit_minutes=1
    )
    pipeline = ProcessingPipeline.create("suite2p", [spec], server, configs_dir=configs)
    run_to_end(server, [pipeline], timeout=240)
    assert pipeline.status is ProcessingStatus.FAILED, pipeline.describe()
    assert pipeline.failure is not None
    assert "TIMEOUT" in pipeline.failure.reason
    assert pipeline.stage == 1, "never advanced"
    state = tracker_of(server, pipeline)
    assert state.encountered_error, "the manager records the silent death in the tracker"
    assert "TIMEOUT" in (state.failure.reason if state.failure else "")


def test_second_manager_is_refused_with_the_owner_id(
    make_server: Callable[..., Server], project: str, tmp_path: Path
) -> None:
    server = make_server("acct")
    spec = generate(server, project, "s1")
    configs = configs_with(tmp_path, "suite2p", {"binarize": "--seconds 4"})
    first = ProcessingPipeline.create("suite2p", [spec], server, configs_dir=configs)
    first.runtime_cycle()
    second = ProcessingPipeline.create("suite2p", [spec], server, configs_dir=configs)
    second.runtime_cycle()
    assert second.status is ProcessingStatus.FAILED
    assert second.failure is not None
    assert str(first.manager_id) in second.failure.reason
    assert second.journal.job_ids == {}
    run_to_end(server, [first])
    assert first.status is ProcessingStatus.SUCCEEDED, first.describe()


def test_polling_many_pipelines_costs_one_remote_command_per_cycle(
    make_server: Callable[..., Server], project: str, tmp_path: Path
) -> None:
    server = make_server("noacct")
    configs = configs_with(tmp_path, "behavior", {"runtime": "--seconds 6"})
    specs = [generate(server, project, f"s{i}") for i in range(3)]
    pipelines = [ProcessingPipeline.create("behavior", [s], server, configs_dir=configs) for s in specs]
    manager = PipelineManager(server, pipelines, max_parallel=3)
    manager.cycle()  # claims the trackers and submits stage 1 of all three
    before = server.round_trips
    manager.cycle()
    assert server.round_trips - before == 1
    run_to_end(server, pipelines)
    assert all(p.status is ProcessingStatus.SUCCEEDED for p in pipelines)


def test_killed_manager_resumes_and_slurm_shows_no_job_submitted_twice(
    testbed: Testbed, make_profile: Callable[..., ServerProfile], project: str, tmp_path: Path
) -> None:
    profile = make_profile("acct", name="itest-acct")
    save_profile(profile)
    server = Server(profile)
    spec = generate(server, project, "s1", planes=3)
    configs = configs_with(tmp_path, "suite2p", {"binarize": "--seconds 3", "plane": "--seconds 3"})
    code = "from sl_pipelines.cli.process import main; raise SystemExit(main())"
    argv = [sys.executable, "-c", code, "suite2p", spec, "--server", profile.name]
    argv += ["--configs", str(configs), "--poll-interval", "0.5", "--json"]
    with (tmp_path / "first-manager.log").open("wb") as log:
        manager = subprocess.Popen(argv, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=log)
        journal = _wait_for_stage(manager, 2)
        manager.send_signal(signal.SIGKILL)
        manager.wait()
    resumed = subprocess.run(
        [*argv, "--resume"], env=os.environ.copy(), capture_output=True, text=True, timeout=180, check=False
    )
    assert resumed.returncode == 0, resumed.stderr
    (result,) = json.loads(resumed.stdout)
    assert result["status"] == "SUCCEEDED"
    assert result["run_token"] == journal.token
    resolved = ProcessingPipeline.resume(RunJournal.load(journal.path), server).resolved
    submitted = sorted(jobs_in_slurm(server, resolved))
    assert submitted == sorted(r.name for r in resolved.all_jobs()), "Slurm's records show each job once"
    server.close()


def _wait_for_stage(process: subprocess.Popen[bytes], stage: int) -> RunJournal:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, "the manager exited before it was killed"
        for path in runs_dir().glob("*.json") if runs_dir().is_dir() else ():
            journal = RunJournal.load(path)
            if journal.stage >= stage:
                return journal
        time.sleep(0.2)
    raise AssertionError(f"the manager never reached stage {stage}")


def test_unknown_session_on_the_server_is_a_clear_error(make_server: Callable[..., Server]) -> None:
    server = make_server("acct")
    from sl_pipelines.errors import SessionNotFoundError  # noqa: PLC0415

    with pytest.raises(
        SessionNotFoundError, match=r"'no-such-session' was not found under .* on testbed-acct"
    ):
        ProcessingPipeline.create("behavior", ["no-such-session"], server)
    assert isinstance(server.storage_root, PurePosixPath)


def test_a_job_slurm_refuses_fails_only_its_pipeline(
    make_server: Callable[..., Server], project: str, tmp_path: Path
) -> None:
    server = make_server("acct")
    refused_spec, good_spec = generate(server, project, "refused"), generate(server, project, "good")
    data = yaml.safe_load((default_configs_dir() / "checksum.yaml").read_text())
    data["stages"][0]["jobs"][0]["partition"] = "nosuchpartition"
    bad_configs = tmp_path / "bad"
    bad_configs.mkdir()
    (bad_configs / "checksum.yaml").write_text(yaml.safe_dump(data))
    refused = ProcessingPipeline.create("checksum", [refused_spec], server, configs_dir=bad_configs)
    good = ProcessingPipeline.create("checksum", [good_spec], server)
    run_to_end(server, [refused, good])  # the refused job goes first: the good one is submitted after
    assert refused.status is ProcessingStatus.FAILED
    assert refused.failure is not None
    assert "refused" in refused.failure.reason
    assert "partition" in refused.failure.reason.lower()
    assert tracker_of(server, refused).encountered_error
    assert good.status is ProcessingStatus.SUCCEEDED, good.describe()


def test_soft_tracker_lock_is_used_by_manager_and_jobs_alike(
    make_server: Callable[..., Server], project: str
) -> None:
    server = make_server("noacct", tracker_lock=LockKind.SOFT)
    spec = generate(server, project, "soft")
    pipeline = ProcessingPipeline.create("behavior", [spec], server, keep_job_logs=True)
    script = pipeline.jobs[1][0][0].render()
    assert "export SL_TRACKER_LOCK=soft" in script
    run_to_end(server, [pipeline])
    assert pipeline.status is ProcessingStatus.SUCCEEDED, pipeline.describe()
    assert tracker_of(server, pipeline).is_complete


@pytest.mark.parametrize("cluster", ["acct", "noacct"])
def test_a_fan_out_stage_runs_as_one_array_and_a_failing_task_is_named_with_its_stderr(
    make_server: Callable[..., Server], project: str, tmp_path: Path, cluster: str
) -> None:
    server = make_server(cluster)
    spec = generate(server, project, "s1", planes=3)
    plane = (
        """bash -c 'if [ "$0" = 1 ]; then echo "plane $0 broke" >&2; exit 4; fi; exec "$@"' {index} """
        "sl-worker demo {tracked} {session_args} --pipeline suite2p --part plane --plane {index} "
        "--planes {planes}"
    )
    configs = configs_with(tmp_path, "suite2p", {}, commands={"plane": plane})
    pipeline = ProcessingPipeline.create("suite2p", [spec], server, configs_dir=configs)
    run_to_end(server, [pipeline])
    planes = [r.name for r in pipeline.resolved.stages[2]]
    ids = [pipeline.state.job_ids[name] for name in planes]
    assert len({job_id.split("_")[0] for job_id in ids}) == 1, "the three planes went out as one array"
    assert [job_id.split("_")[1] for job_id in ids] == ["0", "1", "2"]
    assert pipeline.status is ProcessingStatus.FAILED and pipeline.failure is not None
    assert pipeline.failure.job == planes[1] and "FAILED with exit code 4" in pipeline.failure.reason
    assert "plane 1 broke" in pipeline.failure.stderr_tail  # the task's own stderr, in its own folder
    failure = tracker_of(server, pipeline).failure
    assert failure is not None and failure.job == planes[1]
    others = [server.read_text(pipeline.job(name).stdout_path) for name in (planes[0], planes[2])]
    assert all(text is not None for text in others), "every task logs into its own job folder"
    assert sorted(jobs_in_slurm(server, pipeline.resolved, stages=(2,))) == sorted(planes)


def test_many_sessions_are_found_with_their_session_data_in_one_command(
    make_server: Callable[..., Server], project: str
) -> None:
    server = make_server("noacct")
    specs = [generate(server, project, f"day {i};x", planes=i + 1) for i in range(5)]
    bare = specs[0].rsplit("/", 1)[1]
    as_path = str(server.storage_root / specs[1])
    server.connect()
    before = server.round_trips
    found = find_sessions(server, [bare, as_path, *specs[2:]])
    assert server.round_trips == before + 1
    assert [f"{f.paths.project}/{f.paths.animal}/{f.paths.session}" for f in found] == specs
    assert all(f.session_data is not None and "planes" in f.session_data for f in found)
    pipelines = [ProcessingPipeline.create("suite2p", [f], server, dry_run=True) for f in found]
    assert server.round_trips == before + 1, "building pipelines from found sessions costs nothing more"
    assert [len(p.resolved.stages[2]) for p in pipelines] == [1, 2, 3, 4, 5]
    with pytest.raises(SessionNotFoundError, match="'nope' was not found"):
        find_sessions(server, [specs[0], "nope"])


def test_a_pattern_selects_sessions_with_their_trackers_in_one_command(
    make_server: Callable[..., Server], project: str
) -> None:
    server = make_server("noacct")
    env = shlex.quote(server.environment.value)
    root = shlex.quote(str(server.storage_root))
    server.run(  # 20 sessions: two animals, ten days each
        f"source {env}/bin/activate && for a in A1 A2; do for d in $(seq -w 1 10); do sl-worker generate -q "
        f"--storage-root {root} --project {project} --animal $a --session 2026-01-$d-10-00-00 --planes 1 "
        "--size-kb 1; done; done",
        check=True,
    )
    tracker = (
        server.storage_root
        / project
        / "A2"
        / "2026-01-03-10-00-00"
        / "tracking_data"
        / "video_processing_tracker.yaml"
    )
    server.mkdir(tracker.parent)
    server.write_text(tracker, "not: [a tracker")
    server.connect()
    before = server.round_trips
    found = server.select_sessions(f"{project}/*/2026-01-0[1-5]*")
    assert server.round_trips == before + 1
    assert [f"{s.paths.animal}/{s.paths.session[:10]}" for s in found] == [
        f"{a}/2026-01-0{d}" for a in ("A1", "A2") for d in range(1, 6)
    ]
    assert all(s.session.session_data is not None for s in found)
    assert found[7].trackers == {"video_processing_tracker.yaml": "not: [a tracker"}
    assert len(server.select_sessions(f"{project}/*/*")) == 20
