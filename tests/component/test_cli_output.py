"""What the four commands print into a pipe or a log: every error sentence whole, on one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
LONG = "a-session-name-long-enough-that-any-eighty-column-wrapping-would-have-to-cut-the-sentence"


def _piped(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Runs an installed command with stdout and stderr going to pipes (no terminal, no COLUMNS)."""
    env = {key: value for key, value in os.environ.items() if key not in ("COLUMNS", "LINES")}
    env |= {"SL_PIPELINES_CONFIG_DIR": str(tmp_path / "config"), "SL_PIPELINES_DATA_DIR": str(tmp_path)}
    return subprocess.run(
        [str(BIN / argv[0]), *argv[1:]],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env,
        timeout=60,
        check=False,
    )


def _line_with(text: str, start: str, end: str) -> str:
    """The one line that holds the sentence from ``start`` to ``end``; fails when it is cut."""
    lines = [line for line in text.splitlines() if start in line]
    assert len(lines) == 1, f"{start!r} not on exactly one line:\n{text}"
    assert end in lines[0], f"the sentence was cut after {lines[0]!r}:\n{text}"
    assert len(lines[0]) > 80
    return lines[0]


def test_sl_process_error_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "local").mkdir()  # an empty local backend: the session is not there
    done = _piped(tmp_path, "sl-process", "behavior", f"p/A1/{LONG}", "--local-root", str(tmp_path / "local"))
    assert done.returncode == 2
    line = _line_with(done.stderr, "error: Session", "check the name and that the session was uploaded.")
    assert LONG in line


def test_sl_server_error_is_one_line(tmp_path: Path) -> None:
    done = _piped(tmp_path, "sl-server", "profile", "show", LONG)
    assert done.returncode != 0
    _line_with(done.stderr, f"error: There is no server profile '{LONG}'", "create it with")


def test_sl_server_check_table_keeps_each_row_on_one_line(tmp_path: Path) -> None:
    create = ["profile", "create", "nowhere", "--host", "127.0.0.1", "--port", "1", "--no-agent"]
    create += ["--storage-root", f"/storage/{LONG}", "--working-root", "/work"]
    assert _piped(tmp_path, "sl-server", *create).returncode == 0
    done = _piped(tmp_path, "sl-server", "profile", "check", "nowhere")
    assert done.returncode == 1
    end = "check the host name, the port and that the server is up."
    _line_with(done.stdout, "Cannot reach 127.0.0.1:1", end)


def test_sl_tracker_error_is_one_line(tmp_path: Path) -> None:
    tracker = tmp_path / LONG / "tracking_data" / "behavior_processing_tracker.yaml"
    tracker.parent.mkdir(parents=True)
    tracker.write_text("this: [is not a tracker\n")
    done = _piped(tmp_path, "sl-tracker", "status", str(tracker))
    assert done.returncode == 1
    _line_with(done.stderr, f"error: Tracker file {tracker} is corrupt", f"sl-tracker abort {tracker}")


def test_sl_worker_error_is_one_line(tmp_path: Path) -> None:
    root = tmp_path / LONG
    argv = ["checksum", "--tracker", str(root / "t.yaml"), "--manager-id", "1", "--job-count", "1"]
    argv += ["--job", "j"]
    argv += ["--storage-root", str(root), "--working-root", str(root), "--project", "p", "--animal", "a"]
    done = _piped(tmp_path, "sl-worker", *argv, "--session", "s")
    assert done.returncode != 0
    _line_with(done.stderr, "sl-worker: error: Session", "and the storage root.")
