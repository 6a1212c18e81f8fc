"""``sl-tracker`` end to end on real tracker files: exit codes, JSON, one-sentence errors, abort safety."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import filelock
import pytest

from sl_pipelines.adapters.tracker_store import ProcessingTracker
from sl_pipelines.cli.tracker import main
from sl_pipelines.core.tracker_state import IDLE_STATE

SL_TRACKER = Path(sys.executable).parent / "sl-tracker"


class FakeTerminal(io.StringIO):
    """Stdin as a person at a terminal: answers the confirmation with the given text."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "tracking_data" / "behavior_processing_tracker.yaml"


@pytest.fixture(autouse=True)
def _outside_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SL_TRACKER_LOCK"):
        monkeypatch.delenv(name, raising=False)


def _status(path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["status", str(path), "--json"]) == 0
    payload: dict[str, Any] = json.loads(capsys.readouterr().out)
    return payload


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("error: ")
    return lines[0]


def test_status_of_a_missing_tracker_says_so_and_exits_1(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = path.with_name("behaviour_processing_tracker.yaml")
    for argv in (["status", str(typo)], ["status", str(typo), "--json"]):
        assert main(argv) == 1
        line = _one_error_line(capsys.readouterr().err)
        assert f"There is no tracker file {typo}; check the path" in line
    assert not typo.exists() and not typo.parent.exists(), "status creates nothing"


def test_status_json_of_an_existing_idle_tracker_is_idle(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["abort", str(path), "--yes"]) == 0  # an emergency reset leaves an idle tracker file
    assert path.is_file()
    assert _status(path, capsys) == {
        "path": str(path),
        "status": "idle",
        "manager_id": None,
        "job_count": 1,
        "completed_jobs": [],
        "running": False,
        "complete": False,
        "error": False,
        "failure": None,
        "started_at": None,
        "updated_at": None,
        "retries": [],
    }


def test_a_run_through_the_cli(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["start", str(path), "--manager-id", "7", "--job-count", "2"]) == 0
    assert "running run of manager 7 (0 of 2 jobs complete)" in capsys.readouterr().out
    assert main(["stop", str(path), "--manager-id", "7", "--job", "11_0"]) == 0
    payload = _status(path, capsys)
    assert (payload["running"], payload["complete"], payload["completed_jobs"]) == (True, False, ["11_0"])
    assert main(["stop", str(path), "--manager-id", "7", "--job", "11_1"]) == 0
    payload = _status(path, capsys)
    assert (payload["status"], payload["running"], payload["complete"], payload["manager_id"]) == (
        "complete",
        False,
        True,
        7,
    )
    assert payload["started_at"] and payload["updated_at"]


def test_error_records_job_and_reason(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["start", str(path), "--manager-id", "7", "--job-count", "3"])
    assert main(["error", str(path), "--manager-id", "7", "--job", "11_2", "--reason", "out of memory"]) == 0
    payload = _status(path, capsys)
    assert payload["error"] and not payload["running"]
    assert payload["failure"]["job"] == "11_2" and payload["failure"]["reason"] == "out of memory"
    assert payload["failure"]["at"]


def test_status_table_for_people(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["start", str(path), "--manager-id", "7", "--job-count", "3"])
    main(["error", str(path), "--manager-id", "7", "--job", "11_2", "--reason", "disk [bold]full[/bold]"])
    capsys.readouterr()
    assert main(["status", str(path)]) == 0
    out = capsys.readouterr().out
    for fragment in ("failed", "manager id", "7", "0 of 3", "11_2", "disk [bold]full[/bold]"):
        assert fragment in out


def test_ownership_conflict_is_one_sentence_and_exit_1(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["start", str(path), "--manager-id", "7"])
    capsys.readouterr()
    assert main(["stop", str(path), "--manager-id", "8", "--job", "a"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert str(path) in line and "manager 7" in line and "manager 8" in line


def test_stop_outside_slurm_without_job_is_refused(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["start", str(path), "--manager-id", "7"])
    capsys.readouterr()
    assert main(["stop", str(path), "--manager-id", "7"]) == 1
    assert "no job identity is known" in _one_error_line(capsys.readouterr().err)


def test_corrupt_tracker_is_exit_1_and_abort_yes_resets_it(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path.parent.mkdir(parents=True)
    path.write_text("manager_id: [7\n")
    assert main(["status", str(path)]) == 1
    assert "is corrupt because it is not valid YAML" in _one_error_line(capsys.readouterr().err)
    assert main(["abort", str(path), "--yes"]) == 0
    assert "it held a corrupt file" in capsys.readouterr().out
    assert ProcessingTracker(path).read() == IDLE_STATE


def test_abort_refuses_without_yes_when_stdin_is_not_a_terminal(
    path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    main(["start", str(path), "--manager-id", "7"])
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    capsys.readouterr()
    assert main(["abort", str(path)]) == 2
    assert "pass --yes" in _one_error_line(capsys.readouterr().err)
    assert ProcessingTracker(path).read().is_running


@pytest.mark.parametrize(
    ("answer", "code", "running"), [("y\n", 0, False), ("n\n", 1, True), ("\n", 1, True)]
)
def test_abort_asks_on_a_terminal(
    path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
    code: int,
    running: bool,
) -> None:
    main(["start", str(path), "--manager-id", "7", "--job-count", "4"])
    monkeypatch.setattr(sys, "stdin", FakeTerminal(answer))
    capsys.readouterr()
    assert main(["abort", str(path)]) == code
    out = capsys.readouterr().out
    assert "[y/N]" in out and "running run of manager 7 (0 of 4 jobs complete)" in out
    assert ProcessingTracker(path).read().is_running is running


def test_abort_yes_prints_what_it_reset(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["start", str(path), "--manager-id", "7", "--job-count", "2"])
    main(["error", str(path), "--manager-id", "7", "--job", "5", "--reason", "segfault"])
    capsys.readouterr()
    assert main(["abort", str(path), "--yes"]) == 0
    out = capsys.readouterr().out
    assert "a failed run of manager 7 (0 of 2 jobs complete; job 5 failed: segfault)" in out


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["status"],
        ["start", "t.yaml"],
        ["start", "t.yaml", "--manager-id", "-1"],
        ["start", "t.yaml", "--manager-id", "x"],
        ["start", "t.yaml", "--manager-id", "1", "--job-count", "0"],
        ["--lock", "nfs", "status", "t.yaml"],
        ["--timeout", "-1", "status", "t.yaml"],
        ["frobnicate", "t.yaml"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage: sl-tracker" in capsys.readouterr().err


def test_bad_lock_kind_in_environment_is_a_usage_error(
    path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SL_TRACKER_LOCK", "nfs")
    assert main(["status", str(path)]) == 2
    assert "SL_TRACKER_LOCK='nfs'" in _one_error_line(capsys.readouterr().err)


def test_help_explains_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("status", "start", "stop", "error", "abort", "--lock", "--timeout", "exit status"):
        assert command in out


@pytest.mark.parametrize("position", ["before", "after"])
def test_timeout_option_is_honoured_before_or_after_the_command(
    path: Path, capsys: pytest.CaptureFixture[str], position: str
) -> None:
    main(["start", str(path), "--manager-id", "7"])
    command = ["stop", str(path), "--manager-id", "7", "--job", "a"]
    argv = ["--timeout", "0.2", *command] if position == "before" else [*command, "--timeout", "0.2"]
    with filelock.FileLock(f"{path}.lock").acquire(timeout=1):
        capsys.readouterr()
        began = time.monotonic()
        assert main(argv) == 1
        assert time.monotonic() - began < 3
    assert f"{path}.lock" in _one_error_line(capsys.readouterr().err)


def test_lock_option_selects_the_soft_lock(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--lock", "soft", "start", str(path), "--manager-id", "7"]) == 0
    assert not Path(f"{path}.lock").exists()  # a soft lock removes its marker; a file lock leaves it
    assert main(["start", str(path), "--manager-id", "7", "--lock", "file"]) == 0
    assert Path(f"{path}.lock").exists()


def test_installed_console_script(path: Path) -> None:
    run = subprocess.run(
        [SL_TRACKER, "start", str(path), "--manager-id", "7", "--job-count", "2"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    status = subprocess.run(
        [SL_TRACKER, "status", str(path), "--json"], capture_output=True, text=True, check=False
    )
    assert status.returncode == 0 and json.loads(status.stdout)["manager_id"] == 7
    conflict = subprocess.run(
        [SL_TRACKER, "error", str(path), "--manager-id", "9"], capture_output=True, text=True, check=False
    )
    assert conflict.returncode == 1
    assert "manager 7" in _one_error_line(conflict.stderr)
    refused = subprocess.run(
        [SL_TRACKER, "abort", str(path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 2 and "pass --yes" in _one_error_line(refused.stderr)


def test_status_shows_the_managers_retries(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tracker = ProcessingTracker(path)
    tracker.start(7, job_count=2)
    tracker.error(7, job="big", reason="WorkerInterrupted: SIGTERM")
    tracker.retry(7, "big", 2)
    capsys.readouterr()
    payload = _status(path, capsys)
    assert payload["status"] == "running" and payload["failure"] is None
    assert [(r["job"], r["attempt"], r["reason"]) for r in payload["retries"]] == [
        ("big", 2, "WorkerInterrupted: SIGTERM")
    ]
    assert main(["status", str(path)]) == 0
    assert "big as attempt 2" in " ".join(capsys.readouterr().out.split())
