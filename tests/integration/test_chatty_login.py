"""A login shell that prints: ``~/.bashrc`` and ``~/.profile`` of the testbed user ``sltest3`` print banners.

Many HPC sites print a banner from ``~/.bashrc`` before Debian's "not interactive: return" line, so it
lands in the output of every remote command. Everything the manager reads from a command must be
framed and parsed between markers, never taken as the whole output.
"""

from __future__ import annotations

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
    job_ids = server.submit_jobs(jobs)
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
