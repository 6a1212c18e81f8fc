"""32 jobs report completion at the same moment: no update is lost, completion comes exactly with the 32nd,
and a reader that copies the file without the lock (as an SFTP pull does) never sees half a document."""

from __future__ import annotations

import multiprocessing
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path
from typing import Any

from sl_pipelines.adapters.tracker_store import ProcessingTracker
from sl_pipelines.core.tracker_text import parse_tracker_text
from sl_pipelines.errors import TrackerCorruptError

JOBS = 32
MANAGER = 424242
SPAWN = multiprocessing.get_context("spawn")


def _report(path: str, job: str, barrier: Barrier, results: Any) -> None:
    """One Slurm job: waits for all its siblings, then reports its own completion."""
    tracker = ProcessingTracker(path, timeout=30.0)
    barrier.wait(timeout=60)
    state = tracker.stop(MANAGER, job=job)
    results.put((job, len(state.completed_jobs), state.is_complete, state.is_running))


def _read_without_lock(path: str, ready: Event, done: Event, results: Any) -> None:
    """The manager's view: reads and parses the file in a tight loop, never taking the lock."""
    reads = invalid = 0
    seen: list[tuple[int, bool]] = []  # (completions, complete) each time the reader saw a change
    ready.set()
    while not done.is_set():
        text = Path(path).read_text(encoding="utf-8")
        reads += 1
        try:
            state = parse_tracker_text(text, path=Path(path))
        except TrackerCorruptError:
            invalid += 1
            continue
        observation = (len(state.completed_jobs), state.is_complete)
        if not seen or seen[-1] != observation:
            seen.append(observation)
    results.put((reads, invalid, seen))


def test_32_simultaneous_completions(tmp_path: Path) -> None:
    path = tmp_path / "tracking_data" / "suite2p_processing_tracker.yaml"
    ProcessingTracker(path).start(MANAGER, job_count=JOBS)
    barrier, ready, done = SPAWN.Barrier(JOBS), SPAWN.Event(), SPAWN.Event()
    results, reader_results = SPAWN.Queue(), SPAWN.Queue()
    reader = SPAWN.Process(target=_read_without_lock, args=(str(path), ready, done, reader_results))
    jobs = [
        SPAWN.Process(target=_report, args=(str(path), f"900_{task}", barrier, results))
        for task in range(JOBS)
    ]
    reader.start()
    try:
        assert ready.wait(timeout=60)
        for job in jobs:
            job.start()
        reports = [results.get(timeout=60) for _ in jobs]
        for job in jobs:
            job.join(timeout=60)
        done.set()
        reads, invalid, seen = reader_results.get(timeout=60)
        reader.join(timeout=60)
    finally:
        for process in (*jobs, reader):
            if process.is_alive():
                process.kill()
    assert all(job.exitcode == 0 for job in jobs) and reader.exitcode == 0

    # Each stop ran alone under the lock: the counts its callers saw are exactly 1..32, none lost or repeated.
    assert sorted(count for _, count, _, _ in reports) == list(range(1, JOBS + 1))
    # Complete exactly with the 32nd completion and never before: every caller that saw fewer saw "running".
    for job, count, complete, running in reports:
        assert (complete, running) == (count == JOBS, count < JOBS), job
    final = ProcessingTracker(path).read()
    assert final.is_complete and final.completed_jobs == tuple(sorted(f"900_{t}" for t in range(JOBS)))

    # The unlocked reader never saw a torn or partial file, and what it saw only moved forward.
    assert invalid == 0
    assert reads >= 100, f"the reader only managed {reads} reads"
    assert len(seen) >= 2, "the reader never saw the file change while jobs reported"
    assert [count for count, _ in seen] == sorted({count for count, _ in seen})
    assert all(complete == (count == JOBS) for count, complete in seen)
    assert seen[-1] == (JOBS, True)
