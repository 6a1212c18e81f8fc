"""ProcessingTracker on a real folder: every tracker rule end to end, locks, atomic writes, corrupt files."""

from __future__ import annotations

import itertools
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import filelock
import pytest

from sl_pipelines.adapters.locks import LOCK_KIND_ENV, LockKind, default_lock_kind, make_lock
from sl_pipelines.adapters.tracker_store import ProcessingTracker
from sl_pipelines.core.tracker_state import IDLE_STATE
from sl_pipelines.core.tracker_text import parse_tracker_text
from sl_pipelines.errors import (
    ConfigurationError,
    TrackerCorruptError,
    TrackerError,
    TrackerLockTimeout,
    TrackerOwnershipError,
)

NAME = "behavior_processing_tracker.yaml"


def _clock() -> Iterator[str]:
    for second in itertools.count():
        yield f"2026-01-01T10:{second // 60:02d}:{second % 60:02d}+00:00"


def _tracker(path: Path, **kwargs: Any) -> ProcessingTracker:
    ticks = _clock()
    kwargs.setdefault("environ", {})
    return ProcessingTracker(path, clock=lambda: next(ticks), **kwargs)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "session" / "tracking_data" / NAME


def test_missing_file_reads_idle_without_creating_anything(path: Path) -> None:
    tracker = _tracker(path)
    assert tracker.read() == IDLE_STATE
    assert not tracker.is_running and not tracker.is_complete and not tracker.encountered_error
    assert not path.parent.exists()


def test_first_write_creates_folder_file_and_lock_beside_it(path: Path) -> None:
    tracker = _tracker(path)
    state = tracker.start(7, job_count=2)
    assert tracker.lock_path == path.with_name(NAME + ".lock")
    assert path.is_file() and tracker.lock_path.exists()
    assert parse_tracker_text(path.read_text(), path=path) == state
    assert state.manager_id == 7 and state.job_count == 2 and state.is_running
    assert state.started_at == "2026-01-01T10:00:00+00:00"


def test_start_under_another_id_names_file_owner_and_caller(path: Path) -> None:
    _tracker(path).start(7, job_count=2)
    before = path.read_bytes()
    with pytest.raises(TrackerOwnershipError) as raised:
        _tracker(path).start(8, job_count=2)
    assert (raised.value.owner, raised.value.caller, raised.value.path) == (7, 8, path)
    assert (
        str(path) in str(raised.value)
        and "manager 7" in str(raised.value)
        and "manager 8" in str(raised.value)
    )
    assert path.read_bytes() == before


def test_start_under_the_same_id_changes_nothing(path: Path) -> None:
    tracker = _tracker(path)
    first = tracker.start(7, job_count=3)
    tracker.stop(7, job="a")
    before = path.read_bytes()
    assert tracker.start(7, job_count=3).completed_jobs == ("a",)
    assert path.read_bytes() == before
    assert first.started_at == tracker.read().started_at


def test_stop_takes_the_job_from_slurm_array_then_job_id(path: Path) -> None:
    _tracker(path).start(7, job_count=3)
    _tracker(
        path, environ={"SLURM_ARRAY_JOB_ID": "55", "SLURM_ARRAY_TASK_ID": "2", "SLURM_JOB_ID": "57"}
    ).stop(7)
    _tracker(path, environ={"SLURM_JOB_ID": "60"}).stop(7)
    assert _tracker(path).read().completed_jobs == ("55_2", "60")


def test_stop_without_any_job_identity_refuses_rather_than_guess(path: Path) -> None:
    _tracker(path).start(7, job_count=2)
    before = path.read_bytes()
    with pytest.raises(TrackerError, match="no job identity is known") as raised:
        _tracker(path, environ={}).stop(7)
    assert raised.value.path == path and str(path) in str(raised.value)
    assert path.read_bytes() == before


def test_double_reported_completion_counts_once_and_completes_after_the_last_job(path: Path) -> None:
    tracker = _tracker(path)
    tracker.start(7, job_count=2)
    tracker.stop(7, job="a")
    tracker.stop(7, job="a")
    assert tracker.is_running and not tracker.is_complete
    tracker.stop(7, job="b")
    state = tracker.read()
    assert tracker.is_complete and not tracker.is_running
    assert state.manager_id == 7 and state.completed_jobs == ("a", "b")


def test_non_owner_is_refused_even_after_the_run_finished(path: Path) -> None:
    tracker = _tracker(path)
    tracker.start(7, job_count=1)
    tracker.stop(7, job="a")
    with pytest.raises(TrackerOwnershipError):
        tracker.stop(8, job="b")
    with pytest.raises(TrackerOwnershipError):
        tracker.error(8, job="b")
    assert tracker.is_complete


def test_failure_survives_late_sibling_start_and_stop_until_a_new_run(path: Path) -> None:
    tracker = _tracker(path)
    tracker.start(7, job_count=3)
    tracker.stop(7, job="a")
    tracker.error(7, job="b", reason="segmentation fault")
    assert tracker.encountered_error and not tracker.is_running
    tracker.start(7, job_count=3)  # a sibling of the same run starts late
    tracker.stop(7, job="c")
    tracker.stop(7, job="b")
    state = tracker.read()
    assert state.encountered_error and not state.is_complete and not state.is_running
    assert state.failure is not None
    assert (state.failure.job, state.failure.reason) == ("b", "segmentation fault")
    assert state.completed_jobs == ("a", "b", "c")  # counted (for a retry), yet the run stays failed
    with pytest.raises(TrackerError, match="cannot clear another job's failure"):
        tracker.retry(7, "c", 2)  # a sibling never erases the failure
    with pytest.raises(TrackerOwnershipError):
        tracker.retry(8, "b", 2)
    assert tracker.read().failure == state.failure
    fresh = tracker.start(8, job_count=1)
    assert fresh.is_running and fresh.failure is None and fresh.completed_jobs == ()


def test_a_manager_retry_moves_the_jobs_failure_into_the_history(path: Path) -> None:
    tracker = _tracker(path)
    tracker.start(7, job_count=2)
    tracker.error(7, job="b", reason="killed by SIGTERM")
    tracker.stop(7, job="a")
    state = tracker.retry(7, "b", 2)
    assert state.is_running and state.failure is None
    assert [(r.job, r.attempt, r.reason) for r in state.retries] == [("b", 2, "killed by SIGTERM")]
    assert tracker.retry(7, "b", 2) == state  # repeated by a restarted manager: nothing changes
    assert tracker.stop(7, job="b").is_complete
    assert "retries:" in path.read_text(encoding="utf-8")


def test_error_takes_the_job_from_slurm_or_records_unknown(path: Path) -> None:
    _tracker(path).start(7, job_count=2)
    state = _tracker(path, environ={"SLURM_JOB_ID": "91"}).error(7, reason="timeout")
    assert state.failure is not None and (state.failure.job, state.failure.reason) == ("91", "timeout")
    _tracker(path).abort()
    _tracker(path).start(7, job_count=2)
    state = _tracker(path, environ={}).error(7)
    assert state.failure is not None and state.failure.job == "unknown"


def test_stop_on_an_idle_tracker_is_an_error_not_a_new_run(path: Path) -> None:
    with pytest.raises(TrackerError, match="no run is active"):
        _tracker(path).stop(7, job="a")
    assert _tracker(path).read() == IDLE_STATE


def test_abort_from_anyone_resets_and_returns_what_it_reset(path: Path) -> None:
    _tracker(path).start(7, job_count=2)
    _tracker(path).error(7, job="a", reason="x")
    previous = _tracker(path).abort()
    assert previous.manager_id == 7 and previous.encountered_error
    assert _tracker(path).read() == IDLE_STATE
    assert parse_tracker_text(path.read_text(), path=path) == IDLE_STATE


def test_writes_leave_no_temporary_files(path: Path) -> None:
    tracker = _tracker(path)
    tracker.start(7, job_count=20)
    for job in range(20):
        tracker.stop(7, job=str(job))
    tracker.abort()
    assert sorted(p.name for p in path.parent.iterdir()) == [NAME, NAME + ".lock"]


def test_new_file_is_group_readable_and_an_existing_mode_is_kept(path: Path) -> None:
    old = os.umask(0o002)
    try:
        _tracker(path).start(7, job_count=3)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o664
    path.chmod(0o640)
    _tracker(path).stop(7, job="a")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_lock_held_elsewhere_times_out_fast_naming_the_lock_file(path: Path) -> None:
    tracker = _tracker(path, timeout=0.2)
    tracker.start(7, job_count=1)
    holder = filelock.FileLock(tracker.lock_path)
    with holder.acquire(timeout=1):
        began = time.monotonic()
        with pytest.raises(TrackerLockTimeout) as raised:
            tracker.stop(7, job="a")
        elapsed = time.monotonic() - began
        with pytest.raises(TrackerLockTimeout):
            tracker.read()
    assert 0.15 <= elapsed < 2.0
    assert raised.value.lock_path == tracker.lock_path and raised.value.path == path
    assert raised.value.timeout == 0.2 and isinstance(raised.value, TimeoutError)
    assert str(tracker.lock_path) in str(raised.value)
    assert tracker.stop(7, job="a").is_complete  # released: works again


def test_soft_lock_kind_works_and_times_out_on_a_held_marker(path: Path) -> None:
    tracker = _tracker(path, lock_kind="soft", timeout=0.2)
    assert tracker.lock_kind is LockKind.SOFT
    tracker.start(7, job_count=1)
    assert not tracker.lock_path.exists()  # a soft lock's marker is removed on release
    with filelock.SoftFileLock(tracker.lock_path).acquire(timeout=1), pytest.raises(TrackerLockTimeout):
        tracker.stop(7, job="a")
    assert tracker.stop(7, job="a").is_complete


def test_lock_kind_defaults_from_the_environment(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOCK_KIND_ENV, "soft")
    assert _tracker(path).lock_kind is LockKind.SOFT
    assert _tracker(path, lock_kind="file").lock_kind is LockKind.FILE
    monkeypatch.setenv(LOCK_KIND_ENV, "nfs")
    with pytest.raises(ConfigurationError, match="SL_TRACKER_LOCK='nfs' is not a lock kind"):
        _tracker(path)


@pytest.mark.parametrize(
    ("environ", "kind"),
    [({}, LockKind.FILE), ({LOCK_KIND_ENV: " SOFT "}, LockKind.SOFT), ({LOCK_KIND_ENV: ""}, LockKind.FILE)],
)
def test_default_lock_kind(environ: dict[str, str], kind: LockKind) -> None:
    assert default_lock_kind(environ) is kind


@pytest.mark.parametrize("timeout", [-1.0, float("inf"), float("nan")])
def test_a_lock_that_could_hang_is_refused(tmp_path: Path, timeout: float) -> None:
    with pytest.raises(ConfigurationError, match="finite number of seconds"):
        make_lock(tmp_path / "t.yaml.lock", "file", timeout)


CORRUPT_TEXTS = [
    "status: [running\n",
    "",
    "- 1\n",
    "format: 1\nstatus: idle\n",
]


@pytest.mark.parametrize("text", CORRUPT_TEXTS)
def test_corrupt_file_is_reported_never_reset(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True)
    path.write_text(text)
    tracker = _tracker(path)
    for call in (
        tracker.read,
        lambda: tracker.start(7, 1),
        lambda: tracker.stop(7, "a"),
        lambda: tracker.error(7),
    ):
        with pytest.raises(TrackerCorruptError) as raised:
            call()
        assert raised.value.path == path and str(path) in str(raised.value)
    assert path.read_text() == text


def test_non_utf8_file_is_corrupt(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\xff\xfe status: idle")
    with pytest.raises(TrackerCorruptError, match="not UTF-8"):
        _tracker(path).read()


def test_abort_resets_a_corrupt_file(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_text("completed_jobs: [a, b\n")
    assert _tracker(path).abort() == IDLE_STATE
    assert _tracker(path).read() == IDLE_STATE
    assert _tracker(path).start(9, 1).manager_id == 9


def test_file_system_errors_become_tracker_errors_naming_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    path = blocker / NAME
    with pytest.raises(TrackerError, match="Cannot update tracker") as raised:
        _tracker(path).start(7, 1)
    assert raised.value.path == path and isinstance(raised.value.__cause__, OSError)


def test_the_lock_file_gets_the_trackers_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = tmp_path / "t.yaml"
        tracker = ProcessingTracker(path)
        tracker.start(1, job_count=2)
        path.chmod(0o664)  # the lab made the tracker group-writable
        lock = path.with_name(path.name + ".lock")
        tracker.stop(1, job="a")
        assert (path.stat().st_mode & 0o777, lock.stat().st_mode & 0o777) == (0o664, 0o664)
        lock.unlink()
        tracker.read()
        assert lock.stat().st_mode & 0o777 == 0o664, "a new lock file is made with the tracker's mode"
    finally:
        os.umask(old)
