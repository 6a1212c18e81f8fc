"""Other people's jobs and the lone pipeline's probe, on a quiet testbed: one pipeline's probe and its floor
(``squeue --me; cat TRACKER``) taken in turns, first with nothing else in slurmctld, then with another
user's held jobs; and slurmctld's own time per user-filtered job listing (``sdiag``: REQUEST_JOB_USER_INFO),
which the machine's other load does not blur.

Unlike ``bench_scale.py`` (whose rounds hold 7,000 of the user's own jobs, submitted and cancelled around
the measurements), nothing else happens on the cluster meanwhile. Needs root (``sdiag -r``,
``testbed.sh load-others``); starts nothing: run ``bash scripts/testbed.sh start`` first, and leave
MinJobAge (300 s) after a big run so its finished jobs are gone.

    .venv/bin/python scripts/bench_others.py [--clusters acct,noacct] [--probes 60] [--others 1000]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import time
from pathlib import Path, PurePosixPath

from bench_scale_ops import floor_command, jobs_held
from testbed_profile import testbed_profile

from sl_pipelines.adapters.server import Server
from sl_pipelines.core.seams import ProbeRequest

TESTBED = Path(__file__).with_name("testbed.sh")


def controller_rpc(env: dict[str, str]) -> tuple[int, int]:
    """(count, average µs) of slurmctld's user-filtered job listings since the last ``sdiag -r``."""
    out = subprocess.run(["sdiag"], env=env, capture_output=True, text=True, check=True).stdout
    found = re.search(r"REQUEST_JOB_USER_INFO\s+\(\s*\d+\) count:(\d+)\s+ave_time:(\d+)", out)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def measure(
    server: Server, request: ProbeRequest, floor: str, env: dict[str, str], probes: int, label: str
) -> tuple[float, float, float]:
    subprocess.run(["sdiag", "-r"], env=env, capture_output=True, check=True)
    probe_ms: list[float] = []
    floor_ms: list[float] = []
    for _ in range(probes):
        started = time.perf_counter()
        server.probe(request)
        probe_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        server.run(floor, check=True)
        floor_ms.append((time.perf_counter() - started) * 1000)
    count, average = controller_rpc(env)
    probe, low = statistics.median(probe_ms), statistics.median(floor_ms)
    print(
        f"  {label:<16} probe {probe:6.1f} ms [{min(probe_ms):.1f}-{max(probe_ms):.1f}]   "
        f"floor {low:6.1f} ms [{min(floor_ms):.1f}-{max(floor_ms):.1f}]   "
        f"slurmctld: {count} user listings, {average} µs each",
        flush=True,
    )
    return probe, low, float(average)


def run_cluster(key: str, probes: int, others: int) -> None:
    profile, info = testbed_profile(key, name=f"bench-others-{key}")
    env = dict(os.environ, SLURM_CONF=info["clusters"][key]["slurm_conf"])
    with Server(profile) as server:
        home = server.run("echo $HOME", check=True).stdout.strip()
        folder = f"{home}/bench-others-{os.getpid()}"
        server.run(
            f"mkdir -p {folder} && python3 -c \"print('status: running\\n' * 60)\" > {folder}/tracker.yaml"
        )
        ids = [
            server.run(f"sbatch --parsable --hold -J bench-others-{i} --wrap true", check=True)
            .stdout.strip()
            .split(";")[0]
            for i in range(7)
        ]
        request = ProbeRequest(job_ids=tuple(ids), tracker_paths=(PurePosixPath(f"{folder}/tracker.yaml"),))
        floor = floor_command(f"{folder}/tracker.yaml")
        try:
            server.probe(request)
            held_now = jobs_held(server)
            print(
                f"[{key}] one pipeline's probe (7 held jobs, 1 tracker) and its floor, {probes} each, "
                f"in turns; slurmctld holds {held_now} jobs of every user and state (finished ones stay "
                "for MinJobAge)"
            )
            without = measure(server, request, floor, env, probes, "alone")
            subprocess.run(["bash", str(TESTBED), "load-others", str(others), "--cluster", key], check=True)
            time.sleep(20)  # slurmctld and slurmdbd take in the submissions
            held = measure(server, request, floor, env, probes, f"{others:,} others held")
            print(
                f"[{key}] with/without: probe {held[0] / without[0]:.2f}x (goal <= 1.2x), floor "
                f"{held[1] / without[1]:.2f}x, slurmctld per listing {held[2] / max(without[2], 1):.2f}x",
                flush=True,
            )
        finally:
            subprocess.run(["bash", str(TESTBED), "load-others", "0", "--cluster", key], check=False)
            server.run(f"scancel {' '.join(ids)}; rm -rf -- {folder}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clusters", type=lambda t: t.split(","), default=["acct", "noacct"])
    parser.add_argument("--probes", type=int, default=60, help="probes (and floors) per measurement")
    parser.add_argument("--others", type=int, default=1000, help="another user's held jobs")
    args = parser.parse_args()
    for key in args.clusters:
        run_cluster(key, args.probes, args.others)


if __name__ == "__main__":
    main()
