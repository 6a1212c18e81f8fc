"""A normal (not editable) install works: the wheel ships the pipeline definitions and runs the demo.

The wheel is built from a copy of the source tree (pip's isolated build takes setuptools from the
machine's package index, never from the network beyond it), installed with ``--no-deps`` into a fresh
venv that borrows this environment's dependencies through a ``.pth`` line, and then runs the local demo
from a folder far from the source tree.
"""

from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _run(argv: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def _build_wheel(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(REPO / "src", source / "src", ignore=ignore)  # the real files, not the configs link
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(source)],
        tmp_path,
    )
    (wheel,) = (tmp_path / "dist").glob("sl_pipelines-*.whl")
    return wheel


def _fresh_venv(tmp_path: Path, wheel: Path) -> Path:
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)]
    _run(pip, tmp_path)
    # The dependencies come from this environment (a plain path: its editable sl_pipelines is not loaded).
    (site_packages,) = (venv / "lib").glob("python3*/site-packages")
    (site_packages / "borrowed-dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return venv


def test_the_wheel_ships_the_configs_and_runs_the_local_demo(tmp_path: Path) -> None:
    venv = _fresh_venv(tmp_path, _build_wheel(tmp_path))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run(
        [str(venv / "bin" / "python"), "-c", "import sl_pipelines, sys; print(sl_pipelines.__file__)"],
        elsewhere,
    )
    assert where.stdout.strip().startswith(str(venv)), "the installed copy is used, not the source tree"

    root = tmp_path / "local"
    generate = [str(venv / "bin" / "sl-worker"), "generate", "-q", "--storage-root", str(root / "storage")]
    _run([*generate, "--project", "p", "--animal", "A1", "--session", "s1"], elsewhere)
    process = [str(venv / "bin" / "sl-process"), "behavior", "p/A1/s1", "--local-root", str(root)]
    done = _run([*process, "--json", "--poll-interval", "0.5"], elsewhere)
    (outcome,) = json.loads(done.stdout)
    assert outcome["status"] == "SUCCEEDED", outcome
    assert (root / "working" / "p" / "A1" / "s1" / "processed_data").is_dir()
    workflow = [str(venv / "bin" / "sl-process"), "--workflow", "lab-daily", "p/A1/s1", "--dry-run"]
    planned = _run([*workflow, "--local-root", str(root)], elsewhere)
    steps = "checksum → preparation → [behavior, suite2p, video] → archiving"
    assert steps in planned.stdout, "the workflows ship with the package"
