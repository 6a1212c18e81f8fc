"""Archiving and preparation that cannot lose data: late writers, durability, refusals, re-runs, records.

Each test reproduces one way data was lost or a message misled (issue 8) and checks what a user relies
on: every byte written is somewhere, the message names the complete copy, the tracker's reason leads
with the OS error.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from kill_support import (
    SL_WORKER,
    argv,
    hashes,
    hidden,
    make_session,
    needs_strace,
    rerun,
    strace_prefix,
    tracker_reason,
    wait_for,
)

from sl_pipelines.adapters.tracker_store import ProcessingTracker
from sl_pipelines.errors import VerificationError, WorkerError
from sl_pipelines.vocabulary import ProcessingPipelines
from sl_pipelines.workers.archive_record import read_record, record_path, write_record
from sl_pipelines.workers.archiving import archive_session
from sl_pipelines.workers.preparation import prepare_session


def _everything(*folders: Path) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for folder in folders:
        for path in folder.rglob("*") if folder.is_dir() else ():
            if path.is_file():
                found[path.relative_to(folder).as_posix()] = path.read_bytes()
    return found


# --- writers after the verification (issue 8, 2) -----------------------------------------------------


@needs_strace
def test_writes_after_the_verification_are_kept_never_deleted(tmp_path: Path) -> None:
    """Appends through open files and a new file by path, while the worker is about to delete."""
    paths = make_session(tmp_path)
    working = Path(paths.processed_data)
    original = _everything(working)
    appended = ["behavior/runtime/résultat 00.bin", "suite2p/plane 0/résultat 01.bin", "résultat 04.bin"]
    streams = [(working / name).open("ab") for name in appended]
    prefix = strace_prefix(["unlinkat:delay_enter=1500000:when=1"], trace="unlinkat")
    worker = subprocess.Popen([*prefix, SL_WORKER, *argv("archive", paths, 1)])
    wait_for(lambda: bool(hidden(working, ".archived-")) or worker.poll() is not None)
    for stream in streams:  # the writer that opened its files before the archive started
        stream.write(b"+late")
        stream.close()
    (working / "late").mkdir(parents=True)  # a writer that starts after the verification
    (working / "late" / "new.bin").write_bytes(b"new")
    by_path_appended = False
    try:
        with (working / "vidéo/カメラ/résultat 03.bin").open("ab") as late:
            late.write(b"+by path")
        by_path_appended = True
    except FileNotFoundError:
        pass
    assert worker.wait(timeout=60) == 1
    assert _everything(Path(paths.archived_processed_data)) == original
    left = _everything(working, *hidden(working, ".archived-"))
    for name in appended:
        assert left[name] == original[name] + b"+late", f"{name}: appended bytes lost"
    assert left["late/new.bin"] == b"new"
    if by_path_appended:
        assert left["vidéo/カメラ/résultat 03.bin"].endswith(b"+by path")
    assert "3 files of the working copy appeared or changed after the archive was verified" in tracker_reason(
        paths, "archive"
    )
    assert rerun("archive", paths, 2) == 1, "a re-run must refuse: the working copy holds new data"
    assert tracker_reason(paths, "archive").startswith(
        "VerificationError: Archived data differs from the working copy and neither is complete"
    )
    assert _everything(working, *hidden(working, ".archived-")) == left


# --- durability (issue 8, 3) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One syscall of an ``strace -y -xx`` log: its name, string arguments, other arguments, descriptors."""

    name: str
    strings: list[str]
    flags: str
    fds: list[str]


def _calls(log: Path) -> list[Call]:
    calls = []
    for line in log.read_text().splitlines():
        match = re.match(r"^\d+\s+(\w+)\((.*)\)\s+=", line)
        if match:
            strings = [_decode(s) for s in re.findall(r'"((?:\\x[0-9a-f]{2})*)"', match.group(2))]
            fds = [_decode(p) for p in re.findall(r"<((?:\\x[0-9a-f]{2})+)>", match.group(2))]
            calls.append(Call(match.group(1), strings, re.sub(r'"[^"]*"|<[^>]*>', "", match.group(2)), fds))
    return calls


def _decode(escaped: str) -> str:
    return bytes(int(h, 16) for h in re.findall(r"\\x([0-9a-f]{2})", escaped)).decode("utf-8", "replace")


def _first(calls: list[Call], start: int, test: Callable[[Call], bool]) -> int:
    """The index of the first call at or after ``start`` that passes ``test`` (len(calls) if none)."""
    return next((i for i in range(start, len(calls)) if test(calls[i])), len(calls))


def _timeline(calls: list[Call], name: str, storage: str) -> tuple[int, int, int, int]:
    """Where the copy of ``name`` is created, made durable, dropped from the cache and read again."""
    partial = re.compile(r"/\.partial-processed_data-[^/]+/(.*)$")

    def on(c: Call) -> bool:
        return bool(c.fds) and (m := partial.search(c.fds[0])) is not None and m.group(1) == name

    def created(c: Call) -> bool:
        return c.name == "openat" and "O_CREAT" in c.flags and c.strings[0].endswith(f"/{name}")

    def synced(c: Call) -> bool:
        return (c.name == "syncfs" and c.fds[0].startswith(storage)) or (c.name == "fsync" and on(c))

    written = _first(calls, 0, created)
    durable = _first(calls, written, synced)
    dropped = _first(calls, durable, lambda c: c.name == "fadvise64" and "DONTNEED" in c.flags and on(c))
    return written, durable, dropped, _first(calls, dropped, lambda c: c.name == "readv" and on(c))


@needs_strace
def test_every_archived_file_is_durable_and_read_back_from_disk_before_any_delete(tmp_path: Path) -> None:
    """Durable: its own fsync, or a syncfs of its volume after it was written. Read back: its pages
    dropped from the cache after that, then read again. All before the first delete."""
    paths = make_session(tmp_path)
    files = set(hashes(Path(paths.processed_data)))
    log = tmp_path / "strace.log"
    trace = "openat,fsync,syncfs,fadvise64,readv,unlinkat,rename"
    prefix = [*strace_prefix([], log=log, trace=trace), "-y", "-xx"]
    assert subprocess.run([*prefix, SL_WORKER, *argv("archive", paths, 1)], check=False).returncode == 0
    calls = _calls(log)
    delete = _first(calls, 0, lambda c: c.name == "unlinkat" and ".archived-processed_data-" in c.fds[0])
    for name in files:
        written, durable, dropped, read = _timeline(calls, name, str(paths.storage_root))
        assert written < durable < dropped < read < delete, (name, written, durable, dropped, read, delete)
    renamed = _first(calls, 0, lambda c: c.name == "rename" and ".partial-processed_data-" in c.strings[0])
    synced = _first(calls, renamed, lambda c: c.name == "fsync" and c.fds[0] == str(paths.storage_session))
    assert renamed < synced < delete, "the archive's rename must be durable before any delete"


# --- refusing while a writer runs (issue 8, 2) --------------------------------------------------------

WRITERS = ["behavior", "suite2p", "video", "multiday", "forging"]


@pytest.mark.parametrize("writer", WRITERS)
def test_archiving_refuses_while_a_pipeline_writes_the_working_data(tmp_path: Path, writer: str) -> None:
    paths = make_session(tmp_path, files=5)
    original = hashes(Path(paths.processed_data))
    pipeline = ProcessingPipelines.from_name(writer)
    ProcessingTracker(Path(paths.tracker(pipeline.tracker_file))).start(4242, 3)
    with pytest.raises(
        WorkerError, match=rf"while another pipeline runs on it: {pipeline.value} \(manager 4242"
    ):
        archive_session(paths)
    assert hashes(Path(paths.processed_data)) == original
    assert not Path(paths.archived_processed_data).exists()


@pytest.mark.parametrize("writer", ["behavior", "archiving"])
def test_preparation_refuses_while_a_pipeline_uses_the_working_folder(tmp_path: Path, writer: str) -> None:
    paths = make_session(tmp_path, files=0)
    pipeline = ProcessingPipelines.from_name(writer)
    ProcessingTracker(Path(paths.tracker(pipeline.tracker_file))).start(77, 1)
    with pytest.raises(WorkerError, match=rf"{pipeline.value} \(manager 77"):
        prepare_session(paths)
    assert not (Path(paths.working_session) / "raw_data").exists()


def test_finished_or_failed_writers_do_not_block_archiving(tmp_path: Path) -> None:
    paths = make_session(tmp_path, files=5)
    behavior = ProcessingTracker(Path(paths.tracker(ProcessingPipelines.BEHAVIOR.tracker_file)))
    behavior.start(1, 1)
    behavior.error(1, job="x", reason="crashed")
    assert archive_session(paths).copied


# --- preparation cleans up after itself (issue 8, 4) --------------------------------------------------


def test_preparation_removes_its_leftover_folders_even_when_the_copy_is_verified(tmp_path: Path) -> None:
    paths = make_session(tmp_path, files=0)
    prepare_session(paths)
    prepared = Path(paths.working_session) / "raw_data"
    leftover = prepared.with_name(".partial-raw_data-4242-deadbeef")
    shutil.copytree(prepared, leftover)
    result = prepare_session(paths)
    assert not result.copied
    assert not leftover.exists()
    assert hashes(prepared) == hashes(Path(paths.raw_data))


# --- a re-run names the complete copy (issue 8, 1) ----------------------------------------------------


def test_an_interrupted_delete_by_an_older_version_is_finished(tmp_path: Path) -> None:
    """No record, no aside: the working copy is part of the archive (the old rmtree was cut short)."""
    paths = make_session(tmp_path, files=30)
    working, archive = Path(paths.processed_data), Path(paths.archived_processed_data)
    original = hashes(working)
    shutil.copytree(working, archive)
    for path in sorted(p for p in working.rglob("*") if p.is_file())[:12]:
        path.unlink()
    result = archive_session(paths)
    assert not result.copied and not working.exists()
    assert hashes(archive) == original


def test_a_newer_working_copy_is_kept_and_the_old_archive_is_never_advised_away(tmp_path: Path) -> None:
    paths = make_session(tmp_path, files=10)
    working, archive = Path(paths.processed_data), Path(paths.archived_processed_data)
    shutil.copytree(working, archive)
    (working / "behavior" / "rerun.bin").write_bytes(b"a newer result")
    before = hashes(working), hashes(archive)
    with pytest.raises(VerificationError) as info:
        archive_session(paths)
    message = str(info.value)
    assert message.startswith("Archived data differs from the working copy, which is complete and newer")
    assert "move the old archive aside" in message and "delete it," not in message
    assert (hashes(working), hashes(archive)) == before


def test_when_neither_copy_is_complete_both_are_kept_and_the_message_says_so(tmp_path: Path) -> None:
    paths = make_session(tmp_path, files=10)
    working, archive = Path(paths.processed_data), Path(paths.archived_processed_data)
    shutil.copytree(working, archive)
    next(p for p in working.rglob("*.bin")).unlink()
    (working / "new.bin").write_bytes(b"new")
    before = hashes(working), hashes(archive)
    with pytest.raises(VerificationError, match="neither is complete") as info:
        archive_session(paths)
    assert "and lacks 1 files of the archive" in str(info.value) and "keep both" in str(info.value)
    assert (hashes(working), hashes(archive)) == before


def test_an_archive_that_no_longer_matches_its_record_is_reported_with_the_complete_copy(
    tmp_path: Path,
) -> None:
    paths = make_session(tmp_path, files=10)
    working, archive = Path(paths.processed_data), Path(paths.archived_processed_data)
    archive_session(paths)
    shutil.copytree(archive, working)  # as if killed before the working copy was set aside
    victim = next(p for p in archive.rglob("*.bin"))
    victim.write_bytes(b"damaged later")
    with pytest.raises(
        VerificationError, match=r"^The archive no longer matches the record of its verification"
    ) as info:
        archive_session(paths)
    assert f"the working copy {working} is complete" in str(info.value)
    assert working.is_dir() and victim.read_bytes() == b"damaged later"


def test_a_rerun_over_a_complete_archive_removes_a_temporary_copy_left_beside_it(tmp_path: Path) -> None:
    paths = make_session(tmp_path, files=10)
    working, archive = Path(paths.processed_data), Path(paths.archived_processed_data)
    original = hashes(working)
    shutil.copytree(working, archive)
    stale = archive.with_name(".partial-processed_data-1-dead")
    shutil.copytree(working, stale)
    assert not archive_session(paths).copied
    assert not stale.exists() and hashes(archive) == original and not working.exists()


def test_an_aside_copy_without_its_archive_is_put_back_and_archived(tmp_path: Path) -> None:
    paths = make_session(tmp_path, files=10)
    working = Path(paths.processed_data)
    original = hashes(working)
    working.rename(working.with_name(".archived-processed_data-1-feedbeef"))
    assert archive_session(paths).copied
    assert hashes(Path(paths.archived_processed_data)) == original and not hidden(working, ".archived-")


# --- the record and what cannot be archived ------------------------------------------------------------


def test_the_record_lists_every_file_and_survives_awkward_names(tmp_path: Path) -> None:
    archive = tmp_path / "processed_data"
    files = {
        "a b/c.bin": "0" * 32,
        "new\nline.bin": "1" * 32,
        "back\\slash.bin": "2" * 32,
        "é/ü.bin": "3" * 32,
    }
    write_record(archive, files)
    text = record_path(archive).read_bytes()
    assert b"00000000000000000000000000000000  processed_data/a b/c.bin\n" in text
    assert b"\\11111111111111111111111111111111  processed_data/new\\nline.bin\n" in text
    assert read_record(archive) == files


def test_entries_that_are_not_files_are_refused_before_anything_is_copied(tmp_path: Path) -> None:
    paths = make_session(tmp_path, files=5)
    (Path(paths.processed_data) / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(WorkerError, match=r"1 entries are neither files nor folders \(first: .*dangling"):
        archive_session(paths)
    assert not Path(paths.archived_processed_data).exists() and Path(paths.processed_data).is_dir()
