"""How many tracker updates per second the local disk sustains with 1, 8 and 32 contending processes.

Each process reports ``stop`` for its own distinct jobs on one shared tracker (started with a job count
that covers them all), so every update takes the lock, reads, parses, writes a temp file, fsyncs and
renames. The clock runs from the moment all processes pass a barrier until the last one finishes.
An update costs more as the tracker lists more completed jobs (the YAML is parsed and rewritten whole),
so the table is printed for a realistic run (96 jobs) and for a large one (640 jobs).

    .venv/bin/python scripts/bench_tracker.py [--updates 96 640] [--repeat 3] [--folder DIR] [--lock soft]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from multiprocessing.synchronize import Barrier
from pathlib import Path

from sl_pipelines.adapters.tracker_store import ProcessingTracker

MANAGER = 1
SPAWN = multiprocessing.get_context("spawn")


def _worker(path: str, lock: str, worker: int, count: int, barrier: Barrier) -> None:
    tracker = ProcessingTracker(path, lock_kind=lock, timeout=120.0)
    barrier.wait()
    for index in range(count):
        tracker.stop(MANAGER, job=f"{worker}_{index}")


def measure(folder: Path, processes: int, updates: int, lock: str) -> tuple[int, float]:
    """Runs ``updates`` stop calls split over ``processes`` processes; returns (updates, seconds)."""
    per_process = max(1, updates // processes)
    total = per_process * processes
    path = folder / f"bench_{processes}" / "tracker.yaml"
    ProcessingTracker(path, lock_kind=lock).start(MANAGER, job_count=total)
    barrier = SPAWN.Barrier(processes + 1)
    workers = [
        SPAWN.Process(target=_worker, args=(str(path), lock, n, per_process, barrier))
        for n in range(processes)
    ]
    for process in workers:
        process.start()
    barrier.wait()
    began = time.perf_counter()
    for process in workers:
        process.join()
    elapsed = time.perf_counter() - began
    if any(process.exitcode != 0 for process in workers):
        raise SystemExit("a worker failed; see its traceback above")
    state = ProcessingTracker(path, lock_kind=lock).read()
    if not state.is_complete or len(state.completed_jobs) != total:
        raise SystemExit(f"lost updates: {len(state.completed_jobs)} of {total} recorded")
    return total, elapsed


def main() -> None:
    """Prints one row per process count: updates, seconds, updates per second."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--updates", type=int, nargs="+", default=[96, 640], help="jobs per tracker (= stop calls per row)"
    )
    parser.add_argument(
        "--folder", type=Path, default=None, help="where to put the trackers (default: a temp dir)"
    )
    parser.add_argument("--lock", choices=["file", "soft"], default="file")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row; the median is printed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.folder) as temp:
        print(f"tracker updates on {temp} (lock: {args.lock})")
        print(f"{'processes':>9}  {'jobs':>5}  {'seconds':>7}  {'updates/s':>9}")
        for updates in args.updates:
            for processes in (1, 8, 32):
                runs = [
                    measure(Path(temp) / f"{updates}_{run}", processes, updates, args.lock)
                    for run in range(args.repeat)
                ]
                total, elapsed = runs[0][0], statistics.median(seconds for _, seconds in runs)
                print(f"{processes:>9}  {total:>5}  {elapsed:>7.2f}  {total / elapsed:>9.0f}")


if __name__ == "__main__":
    main()
