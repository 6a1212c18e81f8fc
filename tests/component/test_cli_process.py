"""sl-process and the remote form of sl-tracker, driven through main() on the local backend."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath

import pytest
import yaml

from sl_pipelines.adapters.tracker_store import ProcessingTracker
from sl_pipelines.cli import process, tracker
from sl_pipelines.core.seams import TrackerAction, TrackerOperation
from sl_pipelines.core.wire import decode_outcomes, encode_operations
from sl_pipelines.orchestration.pipeline import default_configs_dir
from sl_pipelines.workers.demo_data import generate_session

SESSION = "2026-01-05 10;$(touch pwned)"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    generate_session(tmp_path / "local" / "storage", "proj", "A1", SESSION, planes=2, size_kb=4)
    return tmp_path / "local"


def test_process_runs_to_success_and_prints_json(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = process.main(["checksum", SESSION, "--local-root", str(root), "--json", "--poll-interval", "0.2"])
    out = capsys.readouterr().out
    assert code == 0, out
    (result,) = json.loads(out)
    assert result["status"] == "SUCCEEDED"
    assert result["session"] == f"proj/A1/{SESSION}"
    assert not Path("pwned").exists()


def test_dry_run_prints_every_script_and_submits_nothing(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = process.main(["suite2p", f"proj/A1/{SESSION}", "--local-root", str(root), "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("#!/bin/bash") == 4  # binarize, two planes, combine
    assert "set -euo pipefail" in out
    outputs = [line for line in out.splitlines() if line.startswith("#SBATCH --output=")]
    assert len(outputs) == 4
    assert all(line.endswith('stdout.txt"') for line in outputs), "scripts print unwrapped"
    assert not (root / "storage" / "proj" / "A1" / SESSION / "tracking_data").exists()
    assert not any((root / ".sl_local" / "jobs").iterdir())


def test_failed_pipeline_exits_1_with_reason(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = root / "storage" / "proj" / "A1" / SESSION / "raw_data"
    (raw / "ax_checksum.txt").write_text("0" * 32 + "\n")
    code = process.main(["checksum", SESSION, "--local-root", str(root), "--json", "--poll-interval", "0.2"])
    (result,) = json.loads(capsys.readouterr().out)
    assert code == 1
    assert result["status"] == "FAILED"
    assert "checksum" in result["reason"].lower()
    assert result["stderr_tail"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["behaviour", "x"], "Unknown pipeline 'behaviour'"),
        (["behavior", "nope"], "'nope' was not found"),
        (["behavior", SESSION, "--param", "planes"], "KEY=VALUE"),
        (["behavior", SESSION, "--resume"], "No unfinished behavior run"),
    ],
)
def test_bad_input_exits_2_with_one_sentence(
    root: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code = process.main([*argv, "--local-root", str(root)])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("planes: 4.0\n", "parameter 'planes' must be a whole number, not 4.0"),
        ("planes: [unclosed\n", "is not valid YAML"),
        ("- a list\n", "must hold a mapping"),
    ],
)
def test_a_bad_session_data_file_is_an_error_not_a_silent_default(
    root: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    data = root / "storage" / "proj" / "A1" / SESSION / "raw_data" / "session_data.yaml"
    data.write_text(text)
    code = process.main(["suite2p", SESSION, "--local-root", str(root), "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and str(data) in " ".join(err.split())
    assert not (root / ".sl_local" / "jobs").exists() or not any((root / ".sl_local" / "jobs").iterdir())


def test_a_list_parameter_given_on_the_command_line_fans_out(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = process.main(
        ["video", SESSION, "--local-root", str(root), "--param", "cameras=face,left", "--dry-run"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "stage 1 (2 jobs)" in out
    assert "face_camera" in out and "left_camera" in out and "right_camera" not in out


def test_remote_tracker_status_and_abort(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = root / "storage" / "proj" / "A1" / SESSION / "tracking_data" / "behavior_processing_tracker.yaml"
    ProcessingTracker(path).start(5, job_count=7)
    assert tracker.main(["--local-root", str(root), "status", SESSION, "--json"]) == 0
    rows = {row["pipeline"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["behavior"]["manager_id"] == 5
    assert rows["behavior"]["running"] is True
    assert rows["suite2p"]["status"] == "idle"
    assert tracker.main(["--local-root", str(root), "abort", SESSION, "--pipeline", "behavior"]) == 2
    assert ProcessingTracker(path).is_running, "no confirmation, nothing reset"
    assert tracker.main(["--local-root", str(root), "abort", SESSION, "--pipeline", "behavior", "--yes"]) == 0
    assert "held a running run of manager 5" in capsys.readouterr().out
    assert not ProcessingTracker(path).is_running


def test_remote_tracker_reports_a_corrupt_tracker_by_name(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = root / "storage" / "proj" / "A1" / SESSION / "tracking_data" / "video_processing_tracker.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{{{")
    assert tracker.main(["--local-root", str(root), "status", SESSION]) == 0
    out = capsys.readouterr().out
    assert "corrupt" in out
    assert path.read_text() == "{{{"


def test_batch_applies_claims_records_and_aborts_in_one_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    free, taken, failing = (tmp_path / n / "t.yaml" for n in ("a", "b", "c"))
    ProcessingTracker(taken).start(99, job_count=1)
    ProcessingTracker(failing).start(5, job_count=2)
    operations = [
        TrackerOperation(TrackerAction.CLAIM, PurePosixPath(free), 7, job_count=3),
        TrackerOperation(TrackerAction.CLAIM, PurePosixPath(taken), 8),
        TrackerOperation(TrackerAction.ERROR, PurePosixPath(failing), 5, job="j1", reason="died"),
        TrackerOperation(TrackerAction.ABORT, PurePosixPath(taken)),
    ]
    monkeypatch.setattr(sys, "stdin", io.StringIO(encode_operations(operations).decode()))
    assert tracker.main(["batch"]) == 0
    output = "Welcome to the cluster!\n" + capsys.readouterr().out  # a login banner does not matter
    outcomes = decode_outcomes(output, 4, where="here")
    assert [o.ok for o in outcomes] == [True, False, True, True]
    assert "99" in outcomes[1].error and not outcomes[1].transient
    state = ProcessingTracker(free).read()
    assert (state.manager_id, state.job_count, state.is_running) == (7, 3, True)
    failure = ProcessingTracker(failing).read().failure
    assert failure is not None and (failure.job, failure.reason) == ("j1", "died")
    assert ProcessingTracker(taken).read().manager_id is None


def test_ctrl_c_without_a_terminal_keeps_the_jobs_and_resume_finishes(root: Path, tmp_path: Path) -> None:
    configs = tmp_path / "configs"
    configs.mkdir()
    data = yaml.safe_load((default_configs_dir() / "suite2p.yaml").read_text())
    data["stages"][0]["jobs"][0]["command"] += " --seconds 4"
    (configs / "suite2p.yaml").write_text(yaml.safe_dump(data))
    code = "from sl_pipelines.cli.process import main; raise SystemExit(main())"
    argv = [
        sys.executable,
        "-c",
        code,
        "suite2p",
        SESSION,
        "--local-root",
        str(root),
        "--configs",
        str(configs),
    ]
    tracker_path = (
        root / "storage" / "proj" / "A1" / SESSION / "tracking_data" / "suite2p_processing_tracker.yaml"
    )
    manager = subprocess.Popen(
        [*argv, "--poll-interval", "0.2"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while not (tracker_path.exists() and ProcessingTracker(tracker_path).is_running):
        assert time.monotonic() < deadline and manager.poll() is None
        time.sleep(0.1)
    manager.send_signal(signal.SIGINT)
    _out, err = manager.communicate(timeout=30)
    assert manager.returncode == 130
    assert "--resume" in err.decode()
    assert ProcessingTracker(tracker_path).is_running, "the run stays owned while its jobs go on"
    resumed = subprocess.run(
        [*argv, "--resume", "--json", "--poll-interval", "0.2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=os.environ.copy(),
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)[0]["status"] == "SUCCEEDED"
    assert ProcessingTracker(tracker_path).is_complete


def test_the_project_table_shows_every_session_by_pipeline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "local"
    for animal, session in (
        ("A1", "2026-01-05-10-00-00"),
        ("A1", "2026-01-06-10-00-00"),
        ("A2", "2026-01-05-11-00-00"),
    ):
        generate_session(root / "storage", "proj", animal, session, planes=1, size_kb=1)
    generate_session(root / "storage", "other", "A1", "2026-01-05-10-00-00", planes=1, size_kb=1)
    first = root / "storage" / "proj" / "A1" / "2026-01-05-10-00-00" / "tracking_data"
    ProcessingTracker(first / "behavior_processing_tracker.yaml").start(5, job_count=1)
    ProcessingTracker(first / "suite2p_processing_tracker.yaml").start(6, job_count=1)
    ProcessingTracker(first / "suite2p_processing_tracker.yaml").error(
        6, job="slp-x-2-plane-1", reason="boom"
    )
    assert tracker.main(["--local-root", str(root), "status", "proj/*/*", "--json"]) == 0
    rows = {row["session"]: row["pipelines"] for row in json.loads(capsys.readouterr().out)}
    assert list(rows) == [
        "proj/A1/2026-01-05-10-00-00",
        "proj/A1/2026-01-06-10-00-00",
        "proj/A2/2026-01-05-11-00-00",
    ]
    first_row = rows["proj/A1/2026-01-05-10-00-00"]
    assert first_row["behavior"]["status"] == "running" and first_row["behavior"]["manager_id"] == 5
    assert (
        first_row["suite2p"]["status"] == "failed" and first_row["suite2p"]["failed_job"] == "slp-x-2-plane-1"
    )
    assert rows["proj/A2/2026-01-05-11-00-00"]["video"] == {"status": "idle"}
    assert tracker.main(["--local-root", str(root), "status", "proj/A1/2026-01-0[5]*", "--csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("session,manifest,checksum") and len(lines) == 2
    assert tracker.main(["--local-root", str(root), "status", "proj/*/*"]) == 0
    table = capsys.readouterr().out
    assert "3 sessions" in table and "totals" in table and "1 failed" in table
    assert tracker.main(["--local-root", str(root), "status", "../*/*"]) == 2


def test_a_pattern_with_dates_and_states_selects_sessions_and_says_why_others_were_left_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "local"
    for animal in ("A1", "A2"):
        for day in range(1, 11):
            generate_session(
                root / "storage", "proj", animal, f"2026-01-{day:02d}-10-00-00", planes=1, size_kb=1
            )
    generate_session(root / "storage", "proj", "A1", "pilot", planes=1, size_kb=1)
    done = (
        root
        / "storage"
        / "proj"
        / "A1"
        / "2026-01-04-10-00-00"
        / "tracking_data"
        / "checksum_resolution_tracker.yaml"
    )
    ProcessingTracker(done).start(3, job_count=1)
    ProcessingTracker(done).stop(3, job="j")
    argv = [
        "checksum",
        "proj/*/*",
        "--local-root",
        str(root),
        "--since",
        "2026-01-03",
        "--until",
        "2026-01-06",
    ]
    assert process.main([*argv, "--pending", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "7 sessions chosen, 14 left out" in out  # days 3-6 of two animals, less the completed one
    rows = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in out.splitlines()
        if line.count("│") == 3
    }
    assert rows["proj/A1/pilot"] == "left out: its name is not a date"
    assert rows["proj/A1/2026-01-04-10-00-00"] == "left out: already complete"
    assert rows["proj/A2/2026-01-07-10-00-00"] == "left out: after 2026-01-06"
    assert rows["proj/A2/2026-01-04-10-00-00"] == "chosen"
    assert process.main(["checksum", "proj/*/*", "--local-root", str(root), "--failed", "--dry-run"]) == 2
    assert "No session matches the selection" in " ".join(capsys.readouterr().err.split())
    assert process.main([*argv, "--pending", "--json", "--poll-interval", "0.2"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 7


def test_a_local_root_that_does_not_exist_is_refused_and_not_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = tmp_path / "loacl"
    assert process.main(["checksum", "proj/*/*", "--local-root", str(typo)]) == 2
    assert f"--local-root {typo} is not a folder" in " ".join(capsys.readouterr().err.split())
    assert tracker.main(["--local-root", str(typo), "status", "proj/*/*"]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert process.main(["--workflow", "quick", "proj/*/*", "--local-root", str(typo)]) == 2
    assert not typo.exists(), "nothing is made where the user pointed by mistake"
