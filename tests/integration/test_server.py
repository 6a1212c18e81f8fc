"""The Server against the real testbed: authentication, host keys, transfers, Slurm with and without sacct."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path, PurePosixPath

import pytest
from conftest import TESTBED_SCRIPT, Testbed

from sl_pipelines.adapters.profiles import ServerProfile
from sl_pipelines.adapters.server import Server, settings_from_profile
from sl_pipelines.adapters.ssh import SSHTransport
from sl_pipelines.adapters.transfer import Verify
from sl_pipelines.core.job import Job, Resources
from sl_pipelines.core.seams import ProbeRequest
from sl_pipelines.core.slurm import AccountingMode
from sl_pipelines.core.states import JobState, JobStatus
from sl_pipelines.errors import (
    AuthenticationFailedError,
    HostKeyMismatchError,
    HostUnreachableError,
    UnknownHostKeyError,
)

WEIRD = "a b;$(touch pwned)`x` 'q' \"d\" %j"


def wait_for(server: Server, job_ids: list[str], timeout: float = 90) -> dict[str, JobStatus]:
    """Polls until every job is terminal; returns the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        states = server.status(job_ids)
        if all(states[job_id].state.is_terminal for job_id in job_ids) or time.monotonic() > deadline:
            return states
        time.sleep(0.5)


def shell_job(folder: PurePosixPath, name: str, script: str, **resources: object) -> Job:
    return Job(
        name=name,
        working_directory=folder / name,
        commands=(("bash", "-c", script),),
        resources=Resources(cpus=1, memory_mb=100, **resources),  # type: ignore[arg-type]
    )


# ------------------------------------------------------------------------------------ connection


def test_connects_by_key(make_server: Callable[..., Server], testbed: Testbed) -> None:
    server = make_server("acct")
    result = server.run("whoami; echo $SLURM_CONF")
    assert result.stdout.split() == [testbed.cluster("acct").user, str(testbed.cluster("acct").slurm_conf)]


def test_connects_by_password(make_server: Callable[..., Server], testbed: Testbed) -> None:
    server = make_server("noacct", key_file=None, use_agent=False, password=testbed.password)
    assert server.run("whoami").stdout.strip() == testbed.cluster("noacct").user


def test_wrong_password_is_refused(make_server: Callable[..., Server]) -> None:
    server = make_server("noacct", key_file=None, use_agent=False, password="not-the-password")
    with pytest.raises(AuthenticationFailedError, match="refused every credential"):
        server.run("true")


def test_accounting_mode_is_detected(make_server: Callable[..., Server]) -> None:
    assert make_server("acct").accounting_mode is AccountingMode.SACCT
    assert make_server("noacct").accounting_mode is AccountingMode.SCONTROL


def test_commands_are_fast_back_to_back(make_server: Callable[..., Server]) -> None:
    server = make_server("acct")
    server.run("true")
    started = time.perf_counter()
    for _ in range(20):
        server.run("true")
    # Without TCP_NODELAY each call waits ~40 ms for a delayed ACK.
    assert (time.perf_counter() - started) / 20 < 0.03


def test_tracker_command_runs_in_the_profile_environment(make_server: Callable[..., Server]) -> None:
    result = make_server("acct").check_tracker_command()
    assert result.ok, result.stderr
    assert "@@SLP@@ result []" in result.stdout


# ------------------------------------------------------------------------------------ Slurm


def test_status_of_20_jobs_is_one_round_trip(
    slurm_server: Server, remote_scratch: Callable[..., PurePosixPath]
) -> None:
    folder = remote_scratch(slurm_server)
    jobs = [shell_job(folder, f"par-{index:02d}", "sleep 2") for index in range(20)]
    slurm_server.connect()  # detects the accounting mode (one command, once per connection)
    started = time.monotonic()
    before = slurm_server.round_trips
    report = slurm_server.submit_jobs(jobs)
    assert slurm_server.round_trips == before + 1  # scripts and sbatch calls in one remote command
    job_ids = [report.submitted[job.name] for job in jobs]
    assert len(set(job_ids)) == 20
    most_running = 0
    while True:
        before = slurm_server.round_trips
        states = slurm_server.status(job_ids)
        assert slurm_server.round_trips == before + 1
        assert set(states) == set(job_ids)
        most_running = max(most_running, sum(s.state is JobState.RUNNING for s in states.values()))
        if all(s.state.is_terminal for s in states.values()) or time.monotonic() - started > 90:
            break
        time.sleep(0.3)
    assert {s.state for s in states.values()} == {JobState.COMPLETED}
    assert all(s.exit_code == 0 for s in states.values())
    assert most_running >= 2, "jobs ran one at a time"
    assert time.monotonic() - started < 20 * 2


def test_cancelled_job_is_cancelled(
    slurm_server: Server, remote_scratch: Callable[..., PurePosixPath]
) -> None:
    job_id = slurm_server.submit(shell_job(remote_scratch(slurm_server), "victim", "sleep 300"))
    slurm_server.cancel([job_id])
    slurm_server.cancel([job_id])  # a second cancel of a finished job is not an error
    assert wait_for(slurm_server, [job_id])[job_id].state is JobState.CANCELLED


def test_exit_code_3_is_failed(slurm_server: Server, remote_scratch: Callable[..., PurePosixPath]) -> None:
    folder = remote_scratch(slurm_server)
    job = shell_job(folder, "fails", "echo about to fail >&2; exit 3")
    job_id = slurm_server.submit(job)
    status = wait_for(slurm_server, [job_id])[job_id]
    assert (status.state, status.exit_code) == (JobState.FAILED, 3)
    assert "about to fail" in (slurm_server.read_text(job.stderr_path) or "")


def test_unknown_job_is_not_found(slurm_server: Server) -> None:
    assert slurm_server.status(["4242424"])["4242424"].state is JobState.NOT_FOUND


@pytest.mark.slow
def test_job_past_its_time_limit_times_out(
    make_server: Callable[..., Server], remote_scratch: Callable[..., PurePosixPath]
) -> None:
    server = make_server("noacct")
    job = shell_job(remote_scratch(server), "too-long", "sleep 300", time_limit_minutes=1)
    job_id = server.submit(job)
    status = wait_for(server, [job_id], timeout=150)[job_id]
    assert status.state is JobState.TIMEOUT


def test_probe_finds_jobs_by_name_and_reads_trackers(
    slurm_server: Server, remote_scratch: Callable[..., PurePosixPath]
) -> None:
    folder = remote_scratch(slurm_server)
    tracker = folder / WEIRD / "tracker.yaml"
    slurm_server.mkdir(tracker.parent)
    slurm_server.write_text(tracker, "status: running\nmarker: @@SLP@@ end 0\n")
    accented = folder / "accented.yaml"  # not plain ASCII: travels base64-encoded
    slurm_server.write_text(accented, "session: caf\u00e9\n")
    job = shell_job(folder, f"probe-token-{os.getpid()}", "true")
    job_id = slurm_server.submit(job)
    slurm_server.connect()  # the accounting mode is detected once per Server
    assert slurm_server.login_bash  # the testbed's users log in with bash: no second bash per probe
    before = slurm_server.round_trips
    result = slurm_server.probe(
        ProbeRequest(job_names=(job.name,), tracker_paths=(tracker, folder / "missing.yaml", accented))
    )
    assert slurm_server.round_trips == before + 1
    assert [status.job_id for status in result.jobs] == [job_id]
    assert result.trackers == {
        tracker: "status: running\nmarker: @@SLP@@ end 0\n",
        folder / "missing.yaml": None,
        accented: "session: caf\u00e9\n",
    }


def test_refused_submission_names_the_job_and_what_was_submitted(
    make_server: Callable[..., Server], remote_scratch: Callable[..., PurePosixPath]
) -> None:
    server = make_server("acct")
    folder = remote_scratch(server)
    good = shell_job(folder, "good", "true")
    bad = shell_job(folder, "bad", "true", partition="no-such-partition")
    later = shell_job(folder, "later", "true")
    report = server.submit_jobs([good, bad, later])
    assert list(report.submitted) == ["good", "later"]  # a refusal does not stop the others
    assert list(report.refused) == ["bad"]
    assert "invalid partition" in report.refused["bad"].lower()
    assert not report.deferred and not report.unknown


# ------------------------------------------------------------------------------------ files


def make_tree(root: Path, small: int, big_bytes: int) -> None:
    for index in range(small):
        sub = root / f"d{index % 10}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{index:04d}.txt").write_bytes(os.urandom(64 + index % 512))
        os.utime(sub / f"f{index:04d}.txt", (1_600_000_000 + index, 1_600_000_000 + index))
    (root / "empty folder").mkdir(parents=True, exist_ok=True)
    if big_bytes:
        with (root / "big.bin").open("wb") as handle:
            for _ in range(big_bytes // (1 << 20)):
                handle.write(os.urandom(1 << 20))


def same_trees(first: Path, second: Path) -> None:
    names = sorted(p.relative_to(first).as_posix() for p in first.rglob("*"))
    assert names == sorted(p.relative_to(second).as_posix() for p in second.rglob("*"))
    for name in names:
        a, b = first / name, second / name
        if a.is_file():
            assert a.read_bytes() == b.read_bytes(), name
            assert int(a.stat().st_mtime) == int(b.stat().st_mtime), name


def test_push_and_pull_a_tree_of_1000_files_and_200_mb(
    make_server: Callable[..., Server], remote_scratch: Callable[..., PurePosixPath], tmp_path: Path
) -> None:
    server = make_server("acct")
    remote = remote_scratch(server) / "tree"
    make_tree(tmp_path / "source", small=1000, big_bytes=200 << 20)
    started = time.monotonic()
    pushed = server.push_tree(tmp_path / "source", remote, verify=Verify.HASH)
    pulled = server.pull_tree(remote, tmp_path / "back", verify=Verify.HASH)
    elapsed = time.monotonic() - started
    assert (pushed.files, pulled.files) == (1001, 1001)
    assert pushed.bytes == pulled.bytes > 200 << 20
    same_trees(tmp_path / "source", tmp_path / "back")
    assert elapsed < 30, f"push + pull took {elapsed:.1f} s"


def test_weird_session_path_survives_everything(
    make_server: Callable[..., Server], remote_scratch: Callable[..., PurePosixPath], tmp_path: Path
) -> None:
    server = make_server("noacct")
    session = remote_scratch(server) / WEIRD
    make_tree(tmp_path / WEIRD, small=5, big_bytes=2 << 20)
    server.push_tree(tmp_path / WEIRD, session, verify=Verify.HASH)
    assert server.exists(session / "big.bin")
    assert "big.bin" in server.list_dir(session)
    server.pull_tree(session, tmp_path / "back", verify=Verify.SIZE)
    same_trees(tmp_path / WEIRD, tmp_path / "back")
    job = Job(
        name=WEIRD.replace("%j", "pct"),
        working_directory=session / "jobs",
        commands=(("bash", "-c", 'echo "$1" > "out put.txt"; pwd', "_", WEIRD),),
        resources=Resources(memory_mb=100),
    )
    job_id = server.submit(job)
    assert wait_for(server, [job_id])[job_id].state is JobState.COMPLETED
    assert server.read_text(job.working_directory / "out put.txt") == WEIRD + "\n"
    assert server.read_text(job.stdout_path) == str(job.working_directory) + "\n"
    assert not server.exists(job.working_directory / "pwned")
    server.remove(session)
    assert not server.exists(session)
    assert server.run("ls ~ | grep -c pwned || true").stdout.strip() == "0"


# ------------------------------------------------------------------------------------ host keys


def transport_without_system_keys(profile: ServerProfile) -> SSHTransport:
    """The profile's transport, ignoring ~/.ssh/known_hosts and /etc (so the test controls every key)."""
    return SSHTransport(replace(settings_from_profile(profile), system_known_hosts=()))


def test_unknown_host_key_is_refused(
    make_profile: Callable[..., ServerProfile], testbed: Testbed, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    profile = make_profile("acct", known_hosts=empty)
    server = Server(profile, transport=transport_without_system_keys(profile))
    with server, pytest.raises(UnknownHostKeyError) as caught:
        server.run("true")
    assert testbed.host_key_fingerprint in str(caught.value)
    assert f"sl-server profile trust {profile.name}'" in str(caught.value)
    assert empty.read_text() == ""


def test_changed_host_key_is_refused_even_when_trusting_unknown_hosts(
    make_profile: Callable[..., ServerProfile], testbed: Testbed, tmp_path: Path
) -> None:
    other = paramiko_free_other_key(tmp_path)
    known = tmp_path / "known_hosts"
    known.write_text(f"[{testbed.host}]:{testbed.port} {other}\n")
    profile = make_profile("acct", known_hosts=known, trust_unknown_hosts=True)
    server = Server(profile, transport=transport_without_system_keys(profile))
    with server, pytest.raises(HostKeyMismatchError) as caught:
        server.run("true")
    message = str(caught.value)
    assert testbed.host_key_fingerprint in message
    assert "CHANGED" in message and message.count("SHA256:") == 2


def test_trusting_unknown_hosts_records_the_key(
    make_profile: Callable[..., ServerProfile], testbed: Testbed, tmp_path: Path
) -> None:
    known = tmp_path / "known_hosts"
    profile = make_profile("acct", known_hosts=known, trust_unknown_hosts=True)
    with Server(profile, transport=transport_without_system_keys(profile)) as server:
        assert server.run("true").ok
    assert known.read_text().startswith(f"[{testbed.host}]:{testbed.port} ssh-ed25519 ")
    assert (known.stat().st_mode & 0o777) == 0o600


def paramiko_free_other_key(tmp_path: Path) -> str:
    """A freshly generated ed25519 public key (``type base64``) that is not the testbed's."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    return " ".join((tmp_path / "other.pub").read_text().split()[:2])


# ------------------------------------------------------------------------------------ faults


def sshd_processes(testbed: Testbed) -> list[int]:
    """The testbed sshd listener and every per-connection sshd process below it."""
    listener = int((testbed.state_dir / "run" / "sshd.daemon.pid").read_text().split()[0])
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [listener]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def restart_sshd(testbed: Testbed) -> None:
    for pid in sshd_processes(testbed):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.3)
    subprocess.run(["bash", str(TESTBED_SCRIPT), "start"], check=True, capture_output=True, timeout=300)


def test_reconnects_after_sshd_restart(make_server: Callable[..., Server], testbed: Testbed) -> None:
    server = make_server("acct")
    assert server.run("echo first").stdout == "first\n"
    before = server.transport.exec_count
    restart_sshd(testbed)
    assert server.run("echo second").stdout == "second\n"
    assert server.status(["4242424"])["4242424"].state is JobState.NOT_FOUND
    assert server.read_text(server.working_root / "no-such-file") is None
    assert server.transport.exec_count > before


def test_non_idempotent_command_is_not_retried_when_the_connection_drops(
    make_server: Callable[..., Server], testbed: Testbed
) -> None:
    server = make_server("acct")
    server.run("true")
    killer = threading.Timer(1.0, restart_sshd, args=(testbed,))
    killer.start()
    try:
        with pytest.raises(HostUnreachableError, match="not retried"):
            server.transport.run("sleep 5; echo done", idempotent=False)
    finally:
        killer.join()
    assert server.run("echo again").stdout == "again\n"


def test_small_file_operations(
    make_server: Callable[..., Server], remote_scratch: Callable[..., PurePosixPath], tmp_path: Path
) -> None:
    server = make_server("acct")
    folder = remote_scratch(server)
    path = folder / "deep" / "er" / "notes.txt"
    server.mkdir(path.parent)
    server.write_text(path, "line 1\nline 2\nline 3\n")
    assert server.read_text(path) == "line 1\nline 2\nline 3\n"
    assert server.read_text(path, tail_bytes=7) == "line 3\n"
    assert server.list_dir(path.parent) == ("notes.txt",)
    assert server.list_dir(folder / "missing") == ()
    assert server.read_text(folder / "missing.txt") is None
    local = tmp_path / "notes.txt"
    assert server.pull_file(path, local) == 21
    assert server.push_file(local, folder / "copy.txt") == 21
    assert server.read_text(folder / "copy.txt") == local.read_text()
    server.remove(path.parent)
    assert not server.exists(path.parent) and server.exists(folder)
