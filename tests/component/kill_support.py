"""Support for the kill trials: sessions, independent hashes, the worker under strace, and the checks.

The checks never use the package's own hashing: every file is hashed with SHA-256 here, so a bug in
the worker's verification cannot hide a loss.
"""

from __future__ import annotations

import hashlib
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

from sl_pipelines.adapters.tracker_store import ProcessingTracker
from sl_pipelines.cli.worker import main
from sl_pipelines.core.layout import SessionPaths
from sl_pipelines.core.tracker_text import parse_tracker_text
from sl_pipelines.vocabulary import TrackerFileNames
from sl_pipelines.workers.demo_data import generate_session

SESSION = "day 1; $(touch pwned) ünïcödé"
SL_WORKER = str(Path(sys.executable).with_name("sl-worker"))
STRACE = shutil.which("strace")
needs_strace = pytest.mark.skipif(
    STRACE is None,
    reason="strace is not installed (the testbed's packages include it: apt-get install strace)",
)
_FOLDERS = ("behavior/runtime", "suite2p/plane 0", "suite2p/plane 1", "vidéo/カメラ", "")


def make_session(root: Path, files: int = 50, seed: int = 0) -> SessionPaths:
    """A session with raw data on the storage volume and ``files`` processed files on the working one."""
    paths = SessionPaths(
        PurePosixPath(root / "storage"), PurePosixPath(root / "working"), "proj", "A 1", SESSION
    )
    generate_session(
        Path(paths.storage_root), paths.project, paths.animal, paths.session, size_kb=8, seed=seed
    )
    rng = random.Random(seed)
    for index in range(files):
        folder = Path(paths.processed_data) / _FOLDERS[index % len(_FOLDERS)]
        folder.mkdir(parents=True, exist_ok=True)
        size = 256 * 1024 if index % 23 == 0 else rng.randrange(1, 16 * 1024)
        (folder / f"résultat {index:02d}.bin").write_bytes(rng.randbytes(size))
    return paths


def hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` by relative path ({} when it does not exist)."""
    if not folder.is_dir():
        return {}
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


def hidden(folder: Path, prefix: str) -> list[Path]:
    """The temporary or aside folders beside ``folder`` (``<prefix><name>-…``)."""
    return sorted(folder.parent.glob(f"{prefix}{folder.name}-*")) if folder.parent.is_dir() else []


def tracker_path(paths: SessionPaths, command: str) -> Path:
    name = TrackerFileNames.ARCHIVING if command == "archive" else TrackerFileNames.PREPARATION
    return Path(paths.tracker(name))


def argv(command: str, paths: SessionPaths, manager_id: int) -> list[str]:
    """The arguments of ``sl-worker COMMAND`` for the session, as a pipeline's job passes them."""
    return [
        command,
        "--tracker",
        str(tracker_path(paths, command)),
        "--manager-id",
        str(manager_id),
        "--job-count",
        "1",
        "--job",
        command,
        "--storage-root",
        str(paths.storage_root),
        "--working-root",
        str(paths.working_root),
        "--project",
        paths.project,
        "--animal",
        paths.animal,
        "--session",
        paths.session,
        "-q",
    ]


@dataclass(frozen=True)
class Kill:
    """Where a trial kills the worker: the Nth call of a syscall (strace), or a delay after its tracker
    says it runs (timer)."""

    signal: signal.Signals
    syscall: str | None = None
    when: int = 0
    delay: float = 0.0

    def __str__(self) -> str:
        where = f"{self.syscall}#{self.when}" if self.syscall else f"{self.delay:.2f}s"
        return f"{self.signal.name}@{where}"


def strace_prefix(inject: Sequence[str], log: Path | None = None, trace: str = "") -> list[str]:
    assert STRACE is not None
    out = ["-o", str(log)] if log else ["-o", "/dev/null"]
    traced = ["-e", f"trace={trace}"] if trace else []
    return [STRACE, "-f", "-qq", "-s", "512", *out, *traced, *[f"--inject={spec}" for spec in inject]]


def run_killed(command: str, paths: SessionPaths, manager_id: int, kill: Kill) -> int | None:
    """Runs the worker in its own process and kills it as ``kill`` says; returns its exit status.

    None: a timer fired after the worker had finished (the signal was not sent).
    """
    args = [SL_WORKER, *argv(command, paths, manager_id)]
    if kill.syscall:
        spec = f"{kill.syscall}:signal={kill.signal.name}:when={kill.when}"
        return subprocess.run([*strace_prefix([spec], trace=kill.syscall), *args], check=False).returncode
    tracker = tracker_path(paths, command)
    before = tracker.read_text() if tracker.exists() else ""
    process = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    wait_for(lambda: process.poll() is not None or (tracker.exists() and tracker.read_text() != before))
    time.sleep(kill.delay)
    if process.poll() is not None:
        return None
    done = parse_tracker_text(tracker.read_text(), path=tracker).is_complete
    process.send_signal(kill.signal)
    code = process.wait(timeout=60)
    assert code != 0 or done, f"{kill}: the worker swallowed the signal and exited 0 before its work was done"
    return code


def calibrate(command: str, paths: SessionPaths, log: Path) -> list[tuple[str, str]]:
    """Runs the worker once under strace; returns its (syscall, arguments) of interest, in order."""
    prefix = strace_prefix([], log=log, trace="openat,rename,unlinkat,rmdir,syncfs,fadvise64")
    result = subprocess.run([*prefix, SL_WORKER, *argv(command, paths, 1)], check=False)
    assert result.returncode == 0, log.read_text()[-2000:]
    calls = []
    for line in log.read_text().splitlines():
        match = re.match(r"^\d+\s+(\w+)\((.*)\)\s+=", line)
        if match:
            calls.append((match.group(1), match.group(2)))
    return calls


def work_time(command: str, paths: SessionPaths) -> float:
    """Seconds from the moment the worker's tracker says it runs until the worker exits."""
    tracker = tracker_path(paths, command)
    before = tracker.read_text() if tracker.exists() else ""
    began = time.monotonic()
    process = subprocess.Popen([SL_WORKER, *argv(command, paths, 1)])
    start = None
    while process.poll() is None:
        if start is None and tracker.exists() and tracker.read_text() != before:
            start = time.monotonic() - began
        time.sleep(0.002)
    end = time.monotonic() - began
    assert process.returncode == 0
    return end - (end if start is None else start)


def nth(calls: Sequence[tuple[str, str]], syscall: str, position: int) -> int:
    """The 1-based count of ``syscall`` calls up to the call at ``position`` in ``calls``."""
    return sum(1 for name, _ in calls[: position + 1] if name == syscall)


def rerun(command: str, paths: SessionPaths, manager_id: int) -> int:
    """Runs the worker again in this process, as a re-submitted job would; returns its exit status."""
    return main(argv(command, paths, manager_id))


def tracker_reason(paths: SessionPaths, command: str) -> str:
    """The failure reason the command's tracker recorded (the test fails when there is none)."""
    failure = ProcessingTracker(tracker_path(paths, command)).read().failure
    assert failure is not None
    return failure.reason


def record_failure_if_running(paths: SessionPaths, command: str, manager_id: int) -> None:
    """What a manager does for a job that died without a word: record its failure."""
    tracker = ProcessingTracker(tracker_path(paths, command))
    if tracker.read().is_running:
        tracker.error(manager_id, job=command, reason="the job was killed")


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def reset(root: Path, template: Path) -> None:
    """Puts the storage and working volumes back as ``template`` holds them."""
    for volume in ("storage", "working"):
        shutil.rmtree(root / volume, ignore_errors=True)
        shutil.copytree(template / volume, root / volume, symlinks=True)


def snapshot_template(root: Path, template: Path) -> None:
    for volume in ("storage", "working"):
        shutil.copytree(root / volume, template / volume, symlinks=True)
