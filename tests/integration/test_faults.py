"""The manager under real faults on the testbed: a controller or munge outage longer than every grace
period, two managers on one run, a job folder that cannot be written, the wrong job blamed, an
operator's failure record, and a dataset of two animals.

Every test runs real ``sl-process`` managers (or the library) against real Slurm over real SSH, and
checks what Slurm itself recorded: no job is ever submitted twice.
"""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Testbed
from pipeline_helpers import (
    SL_PROCESS,
    configs_with,
    generate,
    jobs_in_slurm,
    run_to_end,
    start_manager,
    tracker_of,
)

from sl_pipelines.adapters.profiles import ServerProfile, save_profile
from sl_pipelines.adapters.server import Server
from sl_pipelines.orchestration.journal import RunJournal, runs_dir
from sl_pipelines.orchestration.pipeline import ProcessingPipeline
from sl_pipelines.vocabulary import ProcessingStatus

pytestmark = pytest.mark.usefixtures("private_data_dir")

OUTAGE_SECONDS = 65  # longer than the lost-job grace (60 s): the old manager failed the run here


def _journal() -> list[RunJournal]:
    folder = runs_dir()
    return [RunJournal.load(p) for p in folder.glob("*.json")] if folder.is_dir() else []


def _wait(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def _submitted_once(server: Server, journal: RunJournal) -> None:
    """Slurm's own records (squeue, and sacct where there is accounting) show each job exactly once."""
    resolved = ProcessingPipeline.resume(journal, server).resolved
    assert sorted(jobs_in_slurm(server, resolved)) == sorted(r.name for r in resolved.all_jobs())


def _run_both_clusters_through(
    testbed: Testbed,
    make_profile: Callable[..., ServerProfile],
    project: str,
    tmp_path: Path,
    daemons: tuple[str, ...],
) -> None:
    """Starts a 3-stage run on each cluster, stops ``daemons`` while stage 1 runs, then checks both."""
    servers, managers = {}, {}
    configs = configs_with(tmp_path, "suite2p", {"binarize": "--seconds 20", "plane": "--seconds 1"})
    for key in ("acct", "noacct"):
        profile = make_profile(key, name=f"outage-{key}")
        save_profile(profile)
        servers[key] = Server(profile)
        spec = generate(servers[key], project, "s1")
        argv = ["suite2p", spec, "--server", profile.name, "--configs", str(configs), "--json"]
        managers[key] = start_manager([*argv, "--poll-interval", "2"], tmp_path / f"{key}.log")
    try:
        _wait(lambda: len([j for j in _journal() if j.job_ids]) == 2, "both runs to submit stage 1")
        time.sleep(5)  # the binarize jobs run (20 s): they end during the outage
        with testbed.outage(*daemons):
            time.sleep(OUTAGE_SECONDS)
        outputs = {key: manager.communicate(timeout=300)[0] for key, manager in managers.items()}
    finally:
        for manager in managers.values():
            if manager.poll() is None:
                manager.kill()
                manager.communicate()
    for key, manager in managers.items():
        out = outputs[key]
        log = (tmp_path / f"{key}.log").read_text()
        assert manager.returncode == 0, f"{key}: {log}"
        (result,) = json.loads(out)
        assert result["status"] == "SUCCEEDED", (key, result)
        assert "No answer from" in log, f"{key}: the manager never saw the outage"
    for journal in _journal():
        server = servers["acct" if journal.backend == "outage-acct" else "noacct"]
        _submitted_once(server, journal)
    for server in servers.values():
        server.close()


@pytest.mark.slow
def test_a_controller_outage_longer_than_every_grace_is_ridden_out_on_both_clusters(
    testbed: Testbed, make_profile: Callable[..., ServerProfile], project: str, tmp_path: Path
) -> None:
    testbed.cluster("acct")
    _run_both_clusters_through(
        testbed, make_profile, project, tmp_path, ("slurmctld-slacct", "slurmctld-slnoacct")
    )


@pytest.mark.slow
def test_a_munge_outage_is_ridden_out_on_both_clusters(
    testbed: Testbed, make_profile: Callable[..., ServerProfile], project: str, tmp_path: Path
) -> None:
    testbed.cluster("acct")
    _run_both_clusters_through(testbed, make_profile, project, tmp_path, ("munged",))


def test_two_resumes_of_one_run_the_second_is_refused_naming_the_first(
    make_profile: Callable[..., ServerProfile], project: str, tmp_path: Path
) -> None:
    profile = make_profile("noacct", name="resume-twice")
    save_profile(profile)
    server = Server(profile)
    spec = generate(server, project, "s1")
    configs = configs_with(tmp_path, "suite2p", {"binarize": "--seconds 4", "plane": "--seconds 4"})
    argv = ["suite2p", spec, "--server", profile.name, "--configs", str(configs), "--poll-interval", "0.5"]
    first = start_manager(argv, tmp_path / "first.log")
    _wait(lambda: any(j.stage >= 1 for j in _journal()), "stage 1")
    first.send_signal(signal.SIGKILL)
    first.communicate()
    a = start_manager([*argv, "--resume", "--json"], tmp_path / "a.log")
    b = start_manager([*argv, "--resume", "--json"], tmp_path / "b.log")
    outs = {p.pid: p.communicate(timeout=180)[0] for p in (a, b)}
    winner, loser = (a, b) if a.returncode == 0 else (b, a)
    assert winner.returncode == 0 and loser.returncode == 1
    refusal = (tmp_path / ("b.log" if loser is b else "a.log")).read_text()
    assert f"already driven by pid {winner.pid}" in " ".join(refusal.split())
    assert json.loads(outs[winner.pid])[0]["status"] == "SUCCEEDED"
    (journal,) = _journal()
    _submitted_once(server, journal)
    server.close()


def test_a_job_folder_that_cannot_be_written_fails_only_its_pipeline(
    testbed: Testbed, make_server: Callable[..., Server], project: str
) -> None:
    server = make_server("noacct")
    specs = [generate(server, project, f"s{i}") for i in range(3)]
    pipelines = [ProcessingPipeline.create("checksum", [s], server) for s in specs]
    locked = Path(str(pipelines[1].resolved.jobs_folder))
    locked.mkdir(parents=True)  # made by root: the job user cannot create job folders in it
    locked.chmod(0o555)
    try:
        run_to_end(server, pipelines)
    finally:
        locked.chmod(0o755)
    assert pipelines[1].status is ProcessingStatus.FAILED and pipelines[1].failure is not None
    assert "Permission denied" in pipelines[1].failure.reason
    assert "Could not write job script" in pipelines[1].failure.reason
    assert [p.status for p in (pipelines[0], pipelines[2])] == [ProcessingStatus.SUCCEEDED] * 2
    failure = tracker_of(server, pipelines[1]).failure
    assert failure is not None and "Permission denied" in failure.reason
    assert jobs_in_slurm(server, pipelines[1].resolved) == []  # never reached Slurm


def test_the_job_that_failed_is_blamed_not_the_sibling_cancelled_after_it(
    make_server: Callable[..., Server], project: str, tmp_path: Path
) -> None:
    server = make_server("acct")
    spec = generate(server, project, "s1")
    others = {
        name: "--seconds 60"
        for name in ("face_camera", "left_camera", "right_camera", "actor_microcontroller")
    }
    others |= {"sensor_microcontroller": "--seconds 60", "encoder_microcontroller": "--seconds 60"}
    configs = configs_with(tmp_path, "behavior", others, commands={"runtime": "bash -c 'sleep 3; exit 1'"})
    pipeline = ProcessingPipeline.create("behavior", [spec], server, configs_dir=configs)
    run_to_end(server, [pipeline])
    culprit = pipeline.resolved.stages[1][0].name
    assert pipeline.status is ProcessingStatus.FAILED and pipeline.failure is not None
    assert pipeline.failure.job == culprit and "FAILED with exit code 1" in pipeline.failure.reason
    failure = tracker_of(server, pipeline).failure
    assert failure is not None and failure.job == culprit, "the tracker blames the job that failed"


def test_an_operators_failure_record_ends_the_run_with_their_reason(
    make_profile: Callable[..., ServerProfile], project: str, tmp_path: Path
) -> None:
    profile = make_profile("noacct", name="operator")
    save_profile(profile)
    server = Server(profile)
    spec = generate(server, project, "s1")
    configs = configs_with(tmp_path, "behavior", {"runtime": "--seconds 30"})
    argv = ["behavior", spec, "--server", profile.name, "--poll-interval", "0.5", "--json"]
    manager = start_manager([*argv, "--configs", str(configs)], tmp_path / "manager.log")
    _wait(lambda: any(j.job_ids for j in _journal()), "stage 1")
    (journal,) = _journal()
    tracker = profile.storage_root / spec / "tracking_data" / "behavior_processing_tracker.yaml"
    command = (  # the emergency record, as an operator types it: no --job, so the job is "unknown"
        f"source {shlex.quote(profile.environment.value)}/bin/activate && sl-tracker error "
        f"{shlex.quote(str(tracker))} --manager-id {journal.manager_id} --reason 'stopped by the operator'"
    )
    assert server.run(command).ok
    out, _ = manager.communicate(timeout=120)
    log = (tmp_path / "manager.log").read_text()
    assert manager.returncode == 1 and "Traceback" not in log, log
    (result,) = json.loads(out)
    assert result["status"] == "FAILED" and "stopped by the operator" in result["reason"]
    again = subprocess.run(
        [*SL_PROCESS, *argv, "--configs", str(configs), "--resume"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert "No unfinished behavior run" in again.stderr
    server.close()


def test_a_dataset_of_two_animals_processes_each_session_in_its_own_folder(
    make_server: Callable[..., Server], project: str
) -> None:
    server = make_server("acct")
    first = generate(server, project, "s1", animal="A1")
    second = generate(server, project, "s2", animal="A2")
    pipeline = ProcessingPipeline.create("forging", [first, second], server)
    run_to_end(server, [pipeline])
    assert pipeline.status is ProcessingStatus.SUCCEEDED, pipeline.describe()
    for spec in (first, second):
        output = server.working_root / spec / "processed_data" / "forging"
        assert server.list_dir(output), f"no forging output for {spec}"
    assert not server.exists(server.working_root / project / "A1" / "s2"), "s2 is animal A2's session"


@pytest.mark.parametrize("cluster", ["acct", "noacct"])
def test_a_run_abandoned_on_one_pc_is_seen_and_finished_from_another(
    make_profile: Callable[..., ServerProfile],
    project: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cluster: str,
) -> None:
    profile = make_profile(cluster, name=f"twopc-{cluster}")
    save_profile(profile)
    server = Server(profile)
    spec = generate(server, project, "s1")
    configs = configs_with(tmp_path, "suite2p", {"binarize": "--seconds 4", "plane": "--seconds 4"})
    argv = ["suite2p", spec, "--server", profile.name, "--poll-interval", "0.5"]
    first = start_manager([*argv, "--configs", str(configs)], tmp_path / "pc1.log")
    _wait(lambda: any(j.job_ids for j in _journal()), "stage 1")
    first.send_signal(signal.SIGKILL)  # the lab PC is switched off
    first.communicate()
    monkeypatch.setenv("SL_PIPELINES_DATA_DIR", str(tmp_path / "pc2"))  # another PC: no journal there
    server.connect()
    before = server.round_trips
    status = subprocess.run(
        [*SL_PROCESS, "status", "--server", profile.name, spec, "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    (row,) = json.loads(status.stdout)
    assert row["status"] == "RUNNING" and row["stage"] >= 1 and row["stages"] == 3
    assert f"pid {first.pid}" in row["driver"]
    listing = server.list_runs()
    assert server.round_trips == before + 1, "runs, leases, trackers and jobs in one command"
    assert any(project in snapshot.record for snapshot in listing)
    resumed = subprocess.run(
        [*SL_PROCESS, *argv, "--resume", "--json"], capture_output=True, text=True, timeout=180, check=False
    )
    assert resumed.returncode == 0, resumed.stderr
    (result,) = json.loads(resumed.stdout)
    assert result["status"] == "SUCCEEDED" and result["run_token"] == row["run_token"]
    (journal,) = [j for j in _journal() if j.token == row["run_token"]]
    _submitted_once(server, journal)
    server.close()
