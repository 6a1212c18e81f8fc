"""A login shell that prints: ``~/.bashrc`` and ``~/.profile`` of the testbed user ``sltest3`` print banners.

Many HPC sites print a banner from ``~/.bashrc`` before Debian's "not interactive: return" line, so it
lands in the output of every remote command. Everything the manager reads from a command must be
framed and parsed between markers, never taken as the whole output.
"""

from __future__ import annotations

import shlex
import time
import uuid
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pytest
from conftest import Testbed, ssh_run

from sl_pipelines.adapters.profiles import save_profile
from sl_pipelines.adapters.server import Server
from sl_pipelines.adapters.transfer import Verify
from sl_pipelines.cli import server as server_cli
from sl_pipelines.core.job import Job, Resources
from sl_pipelines.core.seams import ProbeRequest
from sl_pipelines.core.slurm import AccountingMode
from sl_pipelines.core.states import JobState
from sl_pipelines.core.tracker_text import parse_tracker_text
from sl_pipelines.orchestration.manager import PipelineManager
from sl_pipelines.orchestration.pipeline import ProcessingPipeline
from sl_pipelines.vocabulary import ProcessingStatus

BANNER = "Welcome to the cluster"


def test_the_chatty_user_really_prints_into_every_command(testbed: Testbed) -> None:
    chatty = testbed.cluster("chatty")
    assert (chatty.user, chatty.name, chatty.accounting) == ("sltest3", "slnoacct", False)
    assert ssh_run(testbed, chatty, "echo answer", check=True).stdout.splitlines()[0] == BANNER
    login = ssh_run(testbed, chatty, "bash -l -c 'echo answer'", check=True).stdout
    assert "Site profile" in login and login.splitlines()[-1] == "answer"


def test_profile_check_passes_for_a_chatty_login(
    make_profile: Callable[..., object], capsys: pytest.CaptureFixture[str]
) -> None:
    profile = make_profile("chatty")
    save_profile(profile)  # type: ignore[arg-type]
    code = server_cli.main(["profile", "check", "testbed-chatty"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "finished jobs via scontrol" in out
    assert BANNER not in out, "the banner was shown as a check's answer"


def test_accounting_mode_is_detected_through_the_banner(make_server: Callable[..., Server]) -> None:
    assert make_server("chatty").accounting_mode is AccountingMode.SCONTROL


def test_submit_probe_and_status_work_through_the_banner(
    make_server: Callable[..., Server], remote_scratch: Callable[[Server], PurePosixPath]
) -> None:
    server = make_server("chatty")
    folder = remote_scratch(server)
    tracker = folder / "tracker.yaml"
    token = uuid.uuid4().hex[:12]
    server.write_text(tracker, "status: running\n")
    jobs = [
        Job(
            name=f"chatty-{token}-{index}",
            working_directory=folder / f"job-{index}",
            commands=(("bash", "-c", f"echo out-{index}"),),
            resources=Resources(memory_mb=100),
        )
        for index in range(3)
    ]
    report = server.submit_jobs(jobs)
    assert (dict(report.refused), dict(report.deferred), report.unknown) == ({}, {}, ())
    job_ids = [report.submitted[job.name] for job in jobs]
    assert len(set(job_ids)) == 3 and all(job_id.isdigit() for job_id in job_ids)
    deadline = time.monotonic() + 90
    states = server.status(list(job_ids))
    while not all(s.state.is_terminal for s in states.values()):
        assert time.monotonic() < deadline, states
        time.sleep(0.5)
        states = server.status(list(job_ids))
    assert {s.state for s in states.values()} == {JobState.COMPLETED}
    probe = server.probe(ProbeRequest(job_names=tuple(job.name for job in jobs), tracker_paths=(tracker,)))
    assert sorted(s.job_id for s in probe.jobs) == sorted(job_ids)
    assert probe.trackers == {tracker: "status: running\n"}


def test_trees_travel_through_the_banner(
    make_server: Callable[..., Server], remote_scratch: Callable[[Server], PurePosixPath], tmp_path: Path
) -> None:
    server = make_server("chatty")
    remote = remote_scratch(server) / "tree"
    (tmp_path / "source" / "sub").mkdir(parents=True)
    (tmp_path / "source" / "sub" / "a.txt").write_text("alpha\n")
    (tmp_path / "source" / "b.bin").write_bytes(bytes(range(256)) * 10)
    assert server.push_tree(tmp_path / "source", remote, verify=Verify.HASH).files == 2
    assert server.pull_tree(remote, tmp_path / "back", verify=Verify.HASH).files == 2
    assert (tmp_path / "back" / "sub" / "a.txt").read_text() == "alpha\n"
    assert (tmp_path / "back" / "b.bin").read_bytes() == bytes(range(256)) * 10


def test_a_whole_pipeline_runs_for_a_chatty_login(
    make_server: Callable[..., Server], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SL_PIPELINES_DATA_DIR", str(tmp_path / "user-data"))
    server = make_server("chatty")
    project = f"chatty-{uuid.uuid4().hex[:8]}"
    env, storage = shlex.quote(server.environment.value), shlex.quote(str(server.storage_root))
    generate = f"source {env}/bin/activate && sl-worker generate -q --storage-root {storage}"
    server.run(f"{generate} --project {project} --animal A1 --session s1 --planes 2 --size-kb 16", check=True)
    try:
        pipeline = ProcessingPipeline.create("suite2p", [f"{project}/A1/s1"], server)
        manager = PipelineManager(server, [pipeline], poll_interval=0.5, max_interval=1.0)
        deadline = time.monotonic() + 120
        while not manager.finished:
            assert time.monotonic() < deadline, pipeline.describe()
            manager.cycle()
            time.sleep(0.5)
        assert pipeline.status is ProcessingStatus.SUCCEEDED, pipeline.describe()
        tracker = server.read_text(pipeline.remote_tracker_path)
        assert tracker is not None
        assert parse_tracker_text(tracker, path=pipeline.remote_tracker_path).is_complete
    finally:
        server.remove(server.storage_root / project)
        server.remove(server.working_root / project)
