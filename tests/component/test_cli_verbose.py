"""``sl-process -v``: log lines on a terminal go above the live view, never into one of its lines."""

from __future__ import annotations

import contextlib
import os
import pty
import re
import subprocess
import sys
import threading
from pathlib import Path

from sl_pipelines.workers.demo_data import generate_session

SL_PROCESS = Path(sys.executable).parent / "sl-process"
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
LOGGED = "checksum proj/A1/S1: stage 1/1 SUCCEEDED"  # what the manager logs at INFO when the run ends


def _argv(tmp_path: Path) -> list[str]:
    root = tmp_path / "local"
    generate_session(root / "storage", "proj", "A1", "S1", planes=2, size_kb=4)
    return [str(SL_PROCESS), "checksum", "S1", "--local-root", str(root), "-v", "--poll-interval", "0.2"]


def _on_a_terminal(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Runs ``argv`` with stderr on a pseudo-terminal; returns the exit status and what it drew there."""
    controller, terminal = pty.openpty()
    chunks: list[bytes] = []

    def read() -> None:
        with contextlib.suppress(OSError):  # EIO once the other side is closed
            while chunk := os.read(controller, 1 << 16):
                chunks.append(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=terminal, env=env, timeout=120, check=False)
    os.close(terminal)
    reader.join(10)
    os.close(controller)
    return done.returncode, b"".join(chunks).decode(errors="replace")


def test_a_log_line_never_lands_inside_the_live_view(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "160", "SL_PIPELINES_DATA_DIR": str(tmp_path / "data")}
    code, drawn = _on_a_terminal(_argv(tmp_path), env)
    assert code == 0
    assert "Ctrl-C to stop" in drawn, "the live view was drawn"
    lines = [line for line in re.split(r"[\r\n]+", _CONTROL.sub("", drawn)) if LOGGED in line]
    assert lines, drawn[-800:]
    for line in lines:
        assert "INFO" in line, line
        assert "Ctrl-C to stop" not in line and "│" not in line, f"a log line tore the live view: {line!r}"


def test_piped_log_lines_stay_plain(tmp_path: Path) -> None:
    env = {**os.environ, "SL_PIPELINES_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run(_argv(tmp_path), capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0
    assert LOGGED in done.stderr.splitlines(), "one plain line, as before"
