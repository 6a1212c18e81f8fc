"""Hundreds of real behavior pipelines through ``sl-process`` on the testbed, to SUCCEEDED.

Generates ``--pipelines`` demo sessions (default 200: 1,400 jobs of a few seconds) in a fresh project
on one testbed cluster, then runs, as a user would::

    sl-process behavior 'PROJECT/*/*' --server bench-many --max-parallel N --json

in a subprocess with its own user-data and config folders, and prints its exit status, wall time, the
pipelines' outcomes from its ``--json`` and, independently, from the trackers on the server
(``sl-tracker --server P status 'PROJECT/*/*' --json``: one remote command), the manager's CPU time and
peak RSS (the largest of this script's child processes), and the load average before and after. Everything
it created (sessions, trackers, job folders) is removed at the end; the testbed is started if needed.

    .venv/bin/python scripts/bench_many_runs.py [--pipelines 200] [--cluster acct|noacct]
        [--max-parallel 200] [--poll-interval 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench_scale_ops import generate_sessions, loadavg, session_names
from testbed_profile import testbed_profile

from sl_pipelines.adapters.profiles import save_profile
from sl_pipelines.adapters.server import Server

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pipelines", type=int, default=200)
    parser.add_argument("--cluster", default="acct", choices=("acct", "noacct"))
    parser.add_argument("--max-parallel", type=int, default=None, help="default: all at once")
    parser.add_argument("--poll-interval", type=float, default=2.0)
    args = parser.parse_args()
    subprocess.run(["bash", str(ROOT / "scripts" / "testbed.sh"), "start"], check=True, capture_output=True)
    with tempfile.TemporaryDirectory(prefix="sl-bench-many-") as scratch:
        env = dict(os.environ)
        env["SL_PIPELINES_CONFIG_DIR"] = str(Path(scratch) / "config")
        env["SL_PIPELINES_DATA_DIR"] = str(Path(scratch) / "data")
        os.environ.update(SL_PIPELINES_CONFIG_DIR=env["SL_PIPELINES_CONFIG_DIR"])
        profile, _ = testbed_profile(args.cluster, name="bench-many", command_timeout=1800)
        save_profile(profile)
        project = f"many-{uuid.uuid4().hex[:6]}"
        with Server(profile) as server:
            try:
                started = time.monotonic()
                generate_sessions(server, project, session_names(args.pipelines))
                took = time.monotonic() - started
                print(f"generated {args.pipelines} sessions in {project} ({took:.1f} s)", flush=True)
                run(args, project, env)
            finally:
                folders = " ".join(
                    shlex.quote(str(root / project)) for root in (server.storage_root, server.working_root)
                )
                server.run(f"rm -rf -- {folders}", timeout=900)


def run(args: argparse.Namespace, project: str, env: dict[str, str]) -> None:
    parallel = args.max_parallel or args.pipelines
    command = [
        str(BIN / "sl-process"), "behavior", f"{project}/*/*", "--server", "bench-many",
        "--max-parallel", str(parallel), "--poll-interval", str(args.poll_interval), "--json",
    ]  # fmt: skip
    print("$ " + shlex.join(command), flush=True)
    load_before = loadavg()
    started = time.monotonic()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(command, check=False, env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(f"exit status {result.returncode} after {wall:.1f} s; manager CPU {cpu:.1f} s, "
          f"peak RSS {after.ru_maxrss / 1024:.0f} MB; load {load_before:.2f} -> {loadavg():.2f}")  # fmt: skip
    if result.returncode != 0:
        print(result.stderr[-3000:])
    outcome = json.loads(result.stdout) if result.stdout.strip().startswith(("{", "[")) else None
    statuses: dict[str, int] = {}
    for pipeline in _pipelines(outcome):
        status = str(pipeline.get("status"))
        statuses[status] = statuses.get(status, 0) + 1
    print(f"sl-process --json: {len(_pipelines(outcome))} pipelines, by status {statuses}")
    tracked = subprocess.run(
        [str(BIN / "sl-tracker"), "--server", "bench-many", "status", f"{project}/*/*", "--json"],
        check=False, env=env, capture_output=True, text=True,
    )  # fmt: skip
    print(f"trackers on the server (sl-tracker status --json, exit {tracked.returncode}):")
    print(_tracker_summary(tracked.stdout))


def _pipelines(outcome: object) -> list[dict[str, object]]:
    if isinstance(outcome, dict):
        found = outcome.get("pipelines", [])
        return [p for p in found if isinstance(p, dict)] if isinstance(found, list) else []
    if isinstance(outcome, list):
        return [p for p in outcome if isinstance(p, dict)]
    return []


def _tracker_summary(text: str) -> str:
    """The behavior trackers' states, counted, from ``sl-tracker status --json``."""
    try:
        rows = json.loads(text)
    except json.JSONDecodeError:
        return "  (not JSON) " + text[-500:]
    counts: dict[str, int] = {}
    for row in rows:
        status = str(row["pipelines"]["behavior"]["status"])
        counts[status] = counts.get(status, 0) + 1
    return f"  {len(rows)} sessions; behavior trackers by state: {counts}"


if __name__ == "__main__":
    main()
