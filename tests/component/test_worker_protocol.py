"""The tracker protocol of the workers and the ``sl-worker`` command, on real files and processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pytest

from sl_pipelines.adapters.tracker_store import ProcessingTracker
from sl_pipelines.cli.worker import main
from sl_pipelines.core.layout import SessionPaths
from sl_pipelines.core.tracker_state import TrackerState
from sl_pipelines.errors import TrackerOwnershipError, WorkerError
from sl_pipelines.workers.demo_data import generate_session
from sl_pipelines.workers.protocol import (
    MAX_REASON,
    WorkerInterrupted,
    failure_reason,
    run_wrapped,
    tracked,
)

HOSTILE = "s 1;$(touch pwned)"
WORKER = [sys.executable, "-c", "import sys; from sl_pipelines.cli.worker import main; sys.exit(main())"]


@pytest.fixture
def tracker(tmp_path: Path) -> Path:
    return tmp_path / "tracking" / "demo_tracker.yaml"


def _state(path: Path) -> TrackerState:
    return ProcessingTracker(path).read()


def _wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


# --- tracked() -------------------------------------------------------------------------------------


def test_tracked_records_the_completion_of_its_job(tracker: Path) -> None:
    with tracked(tracker, 11, 2, "first") as handle:
        assert handle.is_running
    state = _state(tracker)
    assert state.completed_jobs == ("first",) and state.is_running
    with tracked(tracker, 11, 2, "second"):
        pass
    assert _state(tracker).is_complete


def test_an_exception_is_recorded_with_a_one_line_reason_and_propagates(tracker: Path) -> None:
    with pytest.raises(ValueError, match="boom"), tracked(tracker, 3, 1, "job-a"):
        raise ValueError("boom\nsecond line of detail")
    failure = _state(tracker).failure
    assert failure is not None
    assert (failure.job, failure.reason) == ("job-a", "ValueError: boom")


def test_report_false_leaves_the_completion_unrecorded(tracker: Path) -> None:
    with tracked(tracker, 3, 1, "job-a", report=False):
        pass
    state = _state(tracker)
    assert state.is_running and state.completed_jobs == ()


def test_a_refused_start_runs_nothing_and_records_nothing(tracker: Path) -> None:
    ProcessingTracker(tracker).start(1, 1)
    ran = []
    with pytest.raises(TrackerOwnershipError), tracked(tracker, 2, 1, "intruder"):
        ran.append(True)
    assert ran == []
    state = _state(tracker)
    assert state.manager_id == 1 and state.is_running and state.failure is None


def test_sigterm_inside_the_body_is_recorded_and_handlers_are_restored(tracker: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(WorkerInterrupted) as info, tracked(tracker, 4, 1, "job"):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    assert info.value.signum == signal.SIGTERM
    failure = _state(tracker).failure
    assert failure is not None and failure.reason.startswith("WorkerInterrupted: The worker received SIGTERM")
    assert signal.getsignal(signal.SIGTERM) is before


def test_failure_reason_is_short_and_single_line() -> None:
    assert failure_reason(KeyError("x")) == "KeyError: 'x'"
    assert failure_reason(RuntimeError()) == "RuntimeError"
    long = failure_reason(WorkerError("y" * 1000))
    assert len(long) == MAX_REASON and "\n" not in long


# --- run_wrapped() ---------------------------------------------------------------------------------


def test_run_wrapped_success_completes_the_job(tracker: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    run_wrapped(
        [sys.executable, "-c", f"open({str(out)!r}, 'w').write('done')"],
        tracker_path=tracker,
        manager_id=8,
        job_count=1,
        job="lab-program",
    )
    assert out.read_text() == "done"
    assert _state(tracker).is_complete


def test_run_wrapped_records_the_exit_code_and_last_stderr_line(tracker: Path) -> None:
    script = (
        "import sys; print('early', file=sys.stderr); "
        "print('camera 3 is corrupt', file=sys.stderr); sys.exit(3)"
    )
    with pytest.raises(WorkerError, match="exit code 3: camera 3 is corrupt"):
        run_wrapped([sys.executable, "-c", script], tracker_path=tracker, manager_id=8, job_count=1, job="j")
    failure = _state(tracker).failure
    assert failure is not None and "exit code 3: camera 3 is corrupt" in failure.reason


def test_run_wrapped_with_a_missing_program_is_recorded(tracker: Path, tmp_path: Path) -> None:
    with pytest.raises(WorkerError, match="Cannot start program"):
        run_wrapped(
            [str(tmp_path / "no-such-program")], tracker_path=tracker, manager_id=8, job_count=1, job="j"
        )
    assert _state(tracker).encountered_error


# --- sl-worker in-process --------------------------------------------------------------------------


@pytest.fixture
def session(tmp_path: Path) -> SessionPaths:
    paths = SessionPaths(
        PurePosixPath(tmp_path / "storage"), PurePosixPath(tmp_path / "working"), "proj", "mouse", HOSTILE
    )
    generate_session(Path(paths.storage_root), paths.project, paths.animal, paths.session, size_kb=4)
    return paths


def _args(session: SessionPaths, tracker: Path, command: str, job_count: int = 1) -> list[str]:
    return [
        command,
        "--tracker",
        str(tracker),
        "--manager-id",
        str(2**64 - 1),
        "--job-count",
        str(job_count),
        "--job",
        f"{command}-job",
        "--storage-root",
        str(session.storage_root),
        "--working-root",
        str(session.working_root),
        "--project",
        session.project,
        "--animal",
        session.animal,
        "--session",
        session.session,
    ]


def test_cli_checksum_prepare_archive_succeed_and_report(
    session: SessionPaths, tracker: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in ("checksum", "prepare"):
        path = tracker.with_name(f"{command}.yaml")
        assert main(_args(session, path, command)) == 0
        assert _state(path).completed_jobs == (f"{command}-job",)
    demo = [
        *_args(session, tracker, "demo"),
        "--pipeline",
        "video",
        "--part",
        "face",
        "--inputs",
        "camera_data/f*",
    ]
    assert main(demo) == 0
    archive = tracker.with_name("archive.yaml")
    assert main(_args(session, archive, "archive")) == 0
    assert (Path(session.archived_processed_data) / "video" / "face" / "summary.json").is_file()
    assert not Path(session.processed_data).exists()
    assert "verified" in capsys.readouterr().out


def test_cli_worker_error_is_recorded_then_exits_1_with_one_sentence(
    session: SessionPaths, tracker: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (Path(session.raw_data) / "telomere.bin").write_bytes(b"changed")
    assert main(_args(session, tracker, "checksum")) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("sl-worker: error: Raw data ") and "does not match its stored checksum" in error
    failure = _state(tracker).failure
    assert failure is not None and failure.job == "checksum-job" and "VerificationError" in failure.reason


def test_cli_exit_code_can_disagree_with_the_tracker(session: SessionPaths, tracker: Path) -> None:
    base = [*_args(session, tracker, "demo", job_count=2), "--pipeline", "behavior", "--part", "runtime"]
    assert main([*base, "--fail", "--exit-code", "0"]) == 0
    assert _state(tracker).encountered_error
    other = tracker.with_name("other.yaml")
    assert main([*_args(session, other, "demo"), "--pipeline", "b", "--part", "r", "--exit-code", "3"]) == 3
    assert _state(other).is_complete


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["checksum"],
        ["run", "--tracker", "t", "--manager-id", "1", "--job-count", "1", "--job", "j"],
        ["run", "--tracker", "t", "--manager-id", "-1", "--job-count", "1", "--job", "j", "--", "true"],
        ["run", "--tracker", "t", "--manager-id", "1", "--job-count", "0", "--job", "j", "--", "true"],
    ],
)
def test_cli_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_cli_generate_writes_sessions_with_any_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "generate",
        "--storage-root",
        str(tmp_path),
        "--project",
        "p",
        "--animal",
        "m 1",
        "--animal",
        "m2",
    ]
    assert main([*argv, "--session", HOSTILE, "--planes", "2", "--size-kb", "1"]) == 0
    for animal in ("m 1", "m2"):
        raw = tmp_path / "p" / animal / HOSTILE / "raw_data"
        assert sorted(p.name for p in (raw / "mesoscope_data").iterdir()) == ["plane_0.tif", "plane_1.tif"]
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


# --- sl-worker as a process ------------------------------------------------------------------------


def _start(argv: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*WORKER, *argv], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_sigterm_to_a_running_worker_is_recorded(
    session: SessionPaths, tracker: Path, tmp_path: Path
) -> None:
    argv = [
        *_args(session, tracker, "demo", job_count=3),
        "--pipeline",
        "p",
        "--part",
        "x",
        "--seconds",
        "30",
    ]
    process = _start(argv, tmp_path)
    _wait_for(lambda: _state(tracker).is_running)
    process.send_signal(signal.SIGTERM)
    _out, err = process.communicate(timeout=20)
    assert process.returncode == 128 + signal.SIGTERM
    failure = _state(tracker).failure
    assert failure is not None and failure.job == "demo-job" and "SIGTERM" in failure.reason
    assert "SIGTERM" in err.strip().splitlines()[-1]


def test_sigterm_is_forwarded_to_a_wrapped_program(tracker: Path, tmp_path: Path) -> None:
    marker = tmp_path / "child-got-term"
    child = (
        "import signal, sys, time, pathlib\n"
        f"mark = lambda *a: (pathlib.Path({str(marker)!r}).write_text('TERM'), sys.exit(0))\n"
        "signal.signal(signal.SIGTERM, mark)\n"
        "print('ready', file=sys.stderr, flush=True)\n"
        "time.sleep(30)\n"
    )
    argv = ["run", "--tracker", str(tracker), "--manager-id", "5", "--job-count", "1", "--job", "lab"]
    process = _start([*argv, "--", sys.executable, "-c", child], tmp_path)
    stderr = process.stderr
    assert stderr is not None
    _wait_for(lambda: "ready" in stderr.readline())
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGTERM
    assert marker.read_text() == "TERM"
    failure = _state(tracker).failure
    assert failure is not None and "SIGTERM" in failure.reason


def test_no_report_does_the_work_but_leaves_the_completion_unrecorded(
    session: SessionPaths, tracker: Path, tmp_path: Path
) -> None:
    argv = [*_args(session, tracker, "demo"), "--pipeline", "p", "--part", "x", "--inputs", "behavior_data/*"]
    process = _start([*argv, "--no-report"], tmp_path)
    process.communicate(timeout=30)
    assert process.returncode == 0
    assert (Path(session.processed_data) / "p" / "x" / "summary.json").is_file()
    state = _state(tracker)
    assert state.is_running and state.completed_jobs == () and state.failure is None


def test_a_kill_before_start_leaves_no_trace_in_the_tracker(
    session: SessionPaths, tracker: Path, tmp_path: Path
) -> None:
    argv = [*_args(session, tracker, "demo"), "--pipeline", "p", "--part", "x", "--sleep-before-start", "30"]
    process = _start(argv, tmp_path)
    time.sleep(1.0)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=20)
    assert process.returncode == -signal.SIGTERM
    assert not tracker.exists()
