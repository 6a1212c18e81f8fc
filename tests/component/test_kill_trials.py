"""Kill trials: ``sl-worker archive`` and ``prepare`` killed at chosen and random points, then run again.

The chosen points come from a calibration run under strace: every ``rename``, ``unlinkat`` and
``rmdir`` of interest and the ``openat`` calls that start each phase (copy, read-back, delete). After
each kill an independent SHA-256 of every file shows that nothing was lost or changed and that no
half-written tree sits at a final path; a re-run (alternately with the same manager id, and with a new
one after the failure is recorded as a manager would) completes and leaves exactly the verified result.
"""

from __future__ import annotations

import random
import signal
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kill_support import (
    SL_WORKER,
    Kill,
    argv,
    calibrate,
    hashes,
    hidden,
    make_session,
    needs_strace,
    nth,
    record_failure_if_running,
    rerun,
    reset,
    run_killed,
    snapshot_template,
    strace_prefix,
    tracker_path,
    work_time,
)

from sl_pipelines.adapters.tracker_store import ProcessingTracker
from sl_pipelines.core.layout import SessionPaths
from sl_pipelines.workers.archive_record import read_record

pytestmark = needs_strace
SIGNALS = (signal.SIGTERM, signal.SIGKILL)


@dataclass
class Bench:
    """A session frozen in a template, with the chosen kill points of one command."""

    root: Path
    template: Path
    paths: SessionPaths
    kills: list[Kill]
    working: dict[str, str]
    raw: dict[str, str]
    damaged: dict[str, str]


def _bench(root: Path, command: str, *, damaged: bool) -> Bench:
    paths = make_session(root / "volumes", files=50)
    prepared = Path(paths.working_session) / "raw_data"
    if damaged:  # preparation then replaces a damaged working copy: every rename of it is a kill point
        prepared.mkdir(parents=True)
        (prepared / "telomere.bin").write_bytes(b"damaged")
    bench = Bench(
        root / "volumes",
        root / "template",
        paths,
        [],
        hashes(Path(paths.processed_data)),
        hashes(Path(paths.raw_data)),
        hashes(prepared),
    )
    snapshot_template(bench.root, bench.template)
    subprocess.run([SL_WORKER, "--help"], check=True, capture_output=True)  # compiled, cached imports
    duration = work_time(command, paths)
    reset(bench.root, bench.template)
    calls = calibrate(command, paths, root / "strace.log")
    bench.kills = _chosen(calls, command) + _timers(duration, seed=len(command))
    return bench


def _chosen(calls: list[tuple[str, str]], command: str) -> list[Kill]:
    """Every rename; the first openat of the copy, a middle one, the first of the delete; the first
    syncfs and the middle fadvise64 (the read-back); the first, 25th and last unlinkat and rmdir."""
    data = "processed_data" if command == "archive" else "raw_data"
    positions = [i for i, (name, _) in enumerate(calls) if name == "rename"]
    opens = [i for i, (name, args) in enumerate(calls) if name == "openat" and data in args]
    creates = [i for i in opens if "O_CREAT" in calls[i][1] and ".partial-" in calls[i][1]]
    relative = [i for i, (name, args) in enumerate(calls) if name == "openat" and not args.startswith("AT_")]
    positions += [opens[0], creates[len(creates) // 2], *relative[:1]]
    for syscall, picks in (
        ("unlinkat", (0, 24, -1)),
        ("rmdir", (0, -1)),
        ("syncfs", (0,)),
        ("fadvise64", None),
    ):
        found = [i for i, (name, _) in enumerate(calls) if name == syscall]
        chosen = (len(found) // 2,) if picks is None else picks
        positions += sorted({found[min(p, len(found) - 1)] for p in chosen}) if found else []
    return [
        Kill(sig, calls[p][0], nth(calls, calls[p][0], p)) for p in sorted(set(positions)) for sig in SIGNALS
    ]


def _timers(duration: float, seed: int) -> list[Kill]:
    """Random moments of the work: from the tracker's start until the worker's exit, as measured once."""
    rng = random.Random(seed)
    return [Kill(SIGNALS[i % 2], delay=rng.uniform(0.0, duration)) for i in range(6)]


@pytest.fixture(scope="module")
def archive_bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    yield _bench(tmp_path_factory.mktemp("archive-trials"), "archive", damaged=False)


@pytest.fixture(scope="module")
def prepare_bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    yield _bench(tmp_path_factory.mktemp("prepare-trials"), "prepare", damaged=True)


def _archive_after_kill(bench: Bench, kill: Kill) -> str:
    """No file lost or changed, nothing half-written at the final path; returns the state left."""
    working, archive = Path(bench.paths.processed_data), Path(bench.paths.archived_processed_data)
    archived = hashes(archive)
    assert archived in ({}, bench.working), f"{kill}: a partial or wrong archive is in place"
    if not archived:
        assert hashes(working) == bench.working, f"{kill}: no archive, and the working copy is not whole"
        assert not hidden(working, ".archived-"), f"{kill}: working files set aside before the archive"
        return "no archive, working copy whole"
    assert sorted((read_record(archive) or {}).keys()) == sorted(bench.working), f"{kill}: no record"
    left = [hashes(working), *(hashes(aside) for aside in hidden(working, ".archived-"))]
    for copy in left:
        assert all(bench.working.get(path) == digest for path, digest in copy.items()), f"{kill}: changed"
    kept = sum(len(copy) for copy in left)
    if kept == len(bench.working):
        return "archived, working copy whole"
    return "archived, working copy partly deleted" if kept else "archived, working copy deleted"


def _archive_done(bench: Bench, kill: Kill) -> None:
    working, archive = Path(bench.paths.processed_data), Path(bench.paths.archived_processed_data)
    assert hashes(archive) == bench.working, f"{kill}: the re-run did not leave the whole archive"
    assert sorted((read_record(archive) or {}).keys()) == sorted(bench.working)
    assert not working.exists(), f"{kill}: the working copy is still there"
    assert not hidden(working, ".archived-") and not hidden(archive, ".partial-"), f"{kill}: leftovers"


def _prepare_after_kill(bench: Bench, kill: Kill) -> str:
    prepared = Path(bench.paths.working_session) / "raw_data"
    assert hashes(Path(bench.paths.raw_data)) == bench.raw, f"{kill}: the raw data changed"
    found = hashes(prepared)
    assert found in ({}, bench.raw, bench.damaged), f"{kill}: a partial copy is in place"
    return {0: "no working copy", 1: "old working copy"}.get(len(found), "verified working copy")


def _prepare_done(bench: Bench, kill: Kill) -> None:
    prepared = Path(bench.paths.working_session) / "raw_data"
    assert hashes(prepared) == bench.raw, f"{kill}: the re-run did not leave a verified copy"
    assert not hidden(prepared, ".partial-"), f"{kill}: temporary folders left behind"


def _rerun(bench: Bench, command: str, kill: Kill, index: int) -> int:
    """Same manager id on odd trials; on even ones, the failure recorded and a new manager id."""
    if index % 2:
        return rerun(command, bench.paths, 1)
    record_failure_if_running(bench.paths, command, 1)
    code = rerun(command, bench.paths, 2)
    assert ProcessingTracker(tracker_path(bench.paths, command)).read().is_complete, f"{kill}: tracker"
    return code


def _trials(
    bench: Bench, command: str, after_kill: Callable[[Bench, Kill], str], done: Callable[[Bench, Kill], None]
) -> None:
    """Kills, checks, re-runs and checks again at every kill point; prints the tally."""
    states: Counter[str] = Counter()
    exits: Counter[str] = Counter()
    for index, kill in enumerate(bench.kills):
        reset(bench.root, bench.template)
        code = run_killed(command, bench.paths, 1, kill)
        states[after_kill(bench, kill)] += 1
        assert _rerun(bench, command, kill, index) == 0, f"{kill}: the re-run failed"
        done(bench, kill)
        outcome = {None: "finished before the signal", 0: "exit 0, work done as the signal came"}.get(
            code, f"exit {code}"
        )
        exits[f"{kill.signal.name}/{kill.syscall or 'timer'}: {outcome}"] += 1
    print(
        f"\n{command}: {len(bench.kills)} trials, every re-run verified; left {dict(states)}; {dict(exits)}"
    )


def test_archive_killed_anywhere_loses_nothing_and_a_rerun_finishes(archive_bench: Bench) -> None:
    assert len(archive_bench.kills) >= 30, [str(k) for k in archive_bench.kills]
    _trials(archive_bench, "archive", _archive_after_kill, _archive_done)


def test_prepare_killed_anywhere_loses_nothing_and_a_rerun_cleans_up(prepare_bench: Bench) -> None:
    assert len(prepare_bench.kills) >= 20, [str(k) for k in prepare_bench.kills]
    _trials(prepare_bench, "prepare", _prepare_after_kill, _prepare_done)


def test_issue_8_sigterm_at_the_25th_unlinkat_then_a_new_run_finishes_without_loss(tmp_path: Path) -> None:
    """The issue's reproduction: 50 files, SIGTERM at the 25th unlinkat, then archive again."""
    paths = make_session(tmp_path, files=50)
    working = Path(paths.processed_data)
    original = hashes(working)
    prefix = strace_prefix(["unlinkat:signal=SIGTERM:when=25"], trace="unlinkat")
    killed = subprocess.run([*prefix, SL_WORKER, *argv("archive", paths, 1)], check=False)
    assert killed.returncode == 128 + signal.SIGTERM
    assert hashes(Path(paths.archived_processed_data)) == original
    assert rerun("archive", paths, 2) == 0
    assert hashes(Path(paths.archived_processed_data)) == original
    assert not working.exists() and not hidden(working, ".archived-")
