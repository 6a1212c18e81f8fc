"""The local backend's scheduler knows its jobs' processes by pid AND start time AND boot.

Job records survive a restart of the machine, and pids are reused: a record whose pid now belongs to
another process must read as "the job's process is gone", and that other process must never be
signalled (not at the time limit, not on cancel).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

from sl_pipelines.adapters import local as local_module
from sl_pipelines.adapters.local import LocalBackend
from sl_pipelines.core.job import Job
from sl_pipelines.core.states import JobState


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated process leading its own process group, as a recycled pid would be."""
    process = subprocess.Popen(["sleep", "120"], start_new_session=True)
    yield process
    process.kill()
    process.wait()


def _start_ticks(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _plant_record(root: Path, pid: int, **identity: object) -> LocalBackend:
    """A RUNNING job record, started an hour ago with a one-minute limit, whose pid is ``pid``."""
    backend = LocalBackend(root, max_jobs=2)
    record: dict[str, object] = {
        "job_id": "1",
        "name": "old-job",
        "script": str(root / "job.sh"),
        "stdout": str(root / "stdout.txt"),
        "stderr": str(root / "stderr.txt"),
        "time_limit_s": 60.0,
        "state": "RUNNING",
        "pid": pid,
        "started": time.time() - 3600,
        **identity,
    }
    (root / ".sl_local" / "jobs" / "1.json").write_text(json.dumps(record))
    (root / ".sl_local" / "last_id").write_text("1")
    return backend


def _still_running(process: subprocess.Popen[bytes]) -> bool:
    time.sleep(0.2)  # a signal, had one been sent, has been delivered by now
    return process.poll() is None


IDENTITIES = {
    "record from before this feature (no identity)": lambda pid: {},
    "pid reused by another process": lambda pid: {
        "boot_id": _boot_id(),
        "start_ticks": _start_ticks(pid) - 1,
    },
    "record from before a reboot": lambda pid: {"boot_id": "another-boot", "start_ticks": _start_ticks(pid)},
}


@pytest.mark.parametrize("case", list(IDENTITIES))
def test_a_recycled_pid_is_a_lost_job_and_is_never_signalled(
    case: str, tmp_path: Path, bystander: subprocess.Popen[bytes]
) -> None:
    backend = _plant_record(tmp_path, bystander.pid, **IDENTITIES[case](bystander.pid))
    status = backend.status(["1"])["1"]
    assert status.state is JobState.FAILED
    assert "process is gone" in status.reason
    assert _still_running(bystander), "the unrelated process group was signalled"
    assert backend.status(["1"])["1"].state is JobState.FAILED, "the verdict stays"


def test_cancelling_a_job_whose_pid_was_recycled_signals_nobody(
    tmp_path: Path, bystander: subprocess.Popen[bytes]
) -> None:
    pid = bystander.pid
    backend = _plant_record(tmp_path, pid, boot_id=_boot_id(), start_ticks=_start_ticks(pid) + 5)
    (tmp_path / ".sl_local" / "jobs" / "1.json").write_text(
        json.dumps(
            {**json.loads((tmp_path / ".sl_local" / "jobs" / "1.json").read_text()), "started": time.time()}
        )
    )
    backend.cancel(["1"])
    assert backend.status(["1"])["1"].state is JobState.CANCELLED
    assert _still_running(bystander), "the unrelated process group was signalled"


def test_the_jobs_own_process_group_is_still_stopped(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path, max_jobs=2)
    folder = tmp_path / "working" / "job"
    folder.mkdir(parents=True)
    script = folder / "job.sh"
    script.write_text("#!/bin/bash\nsleep 120 &\necho $! > child.pid\nwait\n")
    job = Job(name="own-job", working_directory=PurePosixPath(folder), commands=(("bash", str(script)),))
    (job_id,) = backend.submit_jobs([job]).submitted.values()
    deadline = time.monotonic() + 20
    while not (folder / "child.pid").exists():
        assert time.monotonic() < deadline, "the job did not start"
        time.sleep(0.05)
    record = json.loads((tmp_path / ".sl_local" / "jobs" / f"{job_id}.json").read_text())
    assert record["boot_id"] == _boot_id()
    assert record["start_ticks"] == _start_ticks(record["pid"])
    child = int((folder / "child.pid").read_text())
    backend.cancel([job_id])
    assert backend.status([job_id])[job_id].state is JobState.CANCELLED
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and Path(f"/proc/{child}/stat").read_text().split()[2] != "Z":
        assert time.monotonic() < deadline, "the job's child process survived the cancel"
        time.sleep(0.05)


def test_a_job_that_ends_between_the_two_looks_is_not_called_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bystander: subprocess.Popen[bytes]
) -> None:
    """The wrapper writes the exit status, then ends: a check that saw no exit file and then no process
    must look at the exit file again (seen once under load: a finished job reported 'process is gone')."""
    pid = bystander.pid
    backend = _plant_record(tmp_path, pid, boot_id=_boot_id(), start_ticks=_start_ticks(pid))
    record = json.loads((tmp_path / ".sl_local" / "jobs" / "1.json").read_text())
    record["started"] = time.time()
    (tmp_path / ".sl_local" / "jobs" / "1.json").write_text(json.dumps(record))

    def ends_now(_record: object) -> bool:  # the job writes its exit status and ends at this moment
        (tmp_path / ".sl_local" / "jobs" / "1.exit").write_text("0\n")
        return False

    monkeypatch.setattr(local_module, "alive", ends_now)
    status = backend.status(["1"])["1"]
    assert status.state is JobState.COMPLETED, status.reason
