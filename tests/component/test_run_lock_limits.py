"""A manager driving more runs than the soft limit on open files allows (each run holds its lock file).

With the common ``ulimit -n 1024`` the 1,019th run used to fail with an unrelated-looking
``KeyError: 'getpwuid(): uid not found'`` (the first thing that needed a descriptor). Now the manager
raises its soft limit to the hard one when it is reached, and says so plainly when even that is not
enough. Each case runs in a child process so the limits of the test process stay as they were.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CHILD = """
import resource, sys
from sl_pipelines.errors import JournalError
from sl_pipelines.orchestration.journal import RunLock
soft, hard = int(sys.argv[1]), int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
locks = []
try:
    for i in range(int(sys.argv[3])):
        lock = RunLock(f"run{i:04d}")
        lock.acquire()
        locks.append(lock)
except JournalError as error:
    print("refused", len(locks), error)
else:
    print("held", len(locks), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def _drive(tmp_path: Path, soft: int, hard: int, runs: int) -> str:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(soft), str(hard), str(runs)],
        env={"SL_PIPELINES_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return result.stdout.strip()


def test_more_runs_than_the_soft_limit_raise_it_to_the_hard_limit(tmp_path: Path) -> None:
    out = _drive(tmp_path, soft=64, hard=4096, runs=300)
    assert out == "held 300 4096"


def test_more_runs_than_the_hard_limit_get_a_plain_refusal(tmp_path: Path) -> None:
    out = _drive(tmp_path, soft=64, hard=64, runs=300)
    verdict, held, message = out.split(" ", 2)
    assert verdict == "refused" and 40 < int(held) < 64
    assert "its limit" in message and "ulimit -n" in message and "run00" in message
