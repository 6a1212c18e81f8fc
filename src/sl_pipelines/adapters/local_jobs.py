"""The local scheduler's job records and the process checks behind them (who a recorded pid really is)."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

from sl_pipelines.core.states import JobState


@dataclass
class JobRecord:
    """A local job as the scheduler keeps it on disk."""

    job_id: str
    name: str
    script: str
    stdout: str
    stderr: str
    time_limit_s: float
    state: str = JobState.PENDING.value
    pid: int | None = None
    started: float | None = None
    ended: float | None = None
    exit_code: int | None = None
    reason: str = ""
    signalled: float | None = None
    # Who the pid is: the kernel's boot id and the process's start time (clock ticks after boot, field
    # 22 of /proc/PID/stat). Records survive reboots and pids are reused: a pid without both is not the job.
    boot_id: str | None = None
    start_ticks: int | None = None
    submitted: float | None = None


def boot_id() -> str:
    """This boot's id: it changes at every restart of the machine."""
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def process_stat(pid: int) -> tuple[str, int] | None:
    """The state letter and the start time (clock ticks after boot) of a process, or None without one."""
    try:
        with Path(f"/proc/{pid}/stat").open() as stream:
            fields = stream.read().rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces
        return fields[0], int(fields[19])  # fields 3 and 22 of proc(5)
    except (FileNotFoundError, IndexError, ValueError):
        return None


def alive(record: JobRecord) -> bool:
    """True while the job's own process runs: same boot, same pid and start time, not a zombie.

    PID 1 may reap a dead process late (it stays a zombie); a pid reused by another process, or a
    record from before a restart, is not the job's process.
    """
    if record.pid is None or record.start_ticks is None or record.boot_id != boot_id():
        return False
    found = process_stat(record.pid)
    return found is not None and found[0] not in ("Z", "X") and found[1] == record.start_ticks


def signal_group(record: JobRecord, sig: signal.Signals) -> None:
    """Signals the job's process group, never a group that may be another's.

    The group is the job's while its leader is the recorded process (a zombie too), or once the leader
    is gone on the same boot: the kernel does not reuse a pid while a group of that number has members.
    """
    if record.pid is None or record.start_ticks is None or record.boot_id != boot_id():
        return
    found = process_stat(record.pid)
    if found is not None and found[1] != record.start_ticks:
        return
    try:
        os.killpg(record.pid, sig)
    except ProcessLookupError:
        return
