"""Archiving and preparation on full and read-only volumes (small tmpfs mounts; needs root).

A failure is one sentence that leads with the OS error, the number of files and the first one, and
that sentence is what the tracker records; nothing is lost and nothing partial is left behind.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kill_support import hashes, hidden, make_session, rerun, tracker_reason

from sl_pipelines.core.layout import SessionPaths
from sl_pipelines.errors import WorkerError
from sl_pipelines.workers.archive_record import record_path
from sl_pipelines.workers.archiving import archive_session
from sl_pipelines.workers.protocol import MAX_REASON

Mount = Callable[[Path, str], Path]


@pytest.fixture
def tmpfs() -> Iterator[Mount]:
    """Mounts small tmpfs volumes (root only); unmounts them afterwards."""
    mounted: list[Path] = []

    def mount(folder: Path, size: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs ({done.stderr.strip()}); these tests need root")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _remount(folder: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(folder)], check=True)


def test_a_full_storage_volume_is_one_sentence_in_the_tracker_and_nothing_is_lost(
    tmp_path: Path, tmpfs: Mount
) -> None:
    tmpfs(tmp_path / "storage", "1m")
    paths = make_session(tmp_path, files=40)
    for index in range(6):  # 6 x 300 kB of processed data: more than the volume holds
        (Path(paths.processed_data) / f"big {index}.bin").write_bytes(os.urandom(300_000))
    original = hashes(Path(paths.processed_data))
    assert rerun("archive", paths, 1) == 1
    reason = tracker_reason(paths, "archive")
    assert reason.startswith("WorkerError: No space left on device: "), reason
    assert re.search(r": \d+ of 46 files could not be copied \(first: /.*/processed_data/big", reason), reason
    assert len(reason) <= MAX_REASON and "[(" not in reason
    assert hashes(Path(paths.processed_data)) == original
    assert not Path(paths.archived_processed_data).exists()
    assert not hidden(Path(paths.archived_processed_data), ".partial-")
    assert not record_path(Path(paths.archived_processed_data)).exists()


def test_a_full_working_volume_fails_preparation_in_one_sentence_and_leaves_no_partial(
    tmp_path: Path, tmpfs: Mount
) -> None:
    tmpfs(tmp_path / "working", "64k")
    paths = make_session(tmp_path / "elsewhere", files=0)
    paths = SessionPaths(paths.storage_root, paths.working_root.parent.parent / "working", *_names(paths))
    assert rerun("prepare", paths, 1) == 1
    reason = tracker_reason(paths, "prepare")
    assert reason.startswith("WorkerError: No space left on device: "), reason
    assert re.search(r": \d+ of 13 files could not be copied \(first: /.*/raw_data/", reason), reason
    assert not (Path(paths.working_session) / "raw_data").exists()
    assert not hidden(Path(paths.working_session) / "raw_data", ".partial-")


def _names(paths: SessionPaths) -> tuple[str, str, str]:
    return paths.project, paths.animal, paths.session


def test_a_read_only_working_volume_keeps_the_working_copy_whole_and_a_rerun_finishes(
    tmp_path: Path, tmpfs: Mount
) -> None:
    tmpfs(tmp_path / "working", "16m")
    paths = make_session(tmp_path, files=20)
    original = hashes(Path(paths.processed_data))
    _remount(tmp_path / "working", "ro")
    with pytest.raises(WorkerError) as info:
        archive_session(paths)
    message = str(info.value)
    assert message.startswith("Read-only file system: cannot move the working copy")
    assert f"the archive {paths.archived_processed_data} is complete and verified" in message
    assert hashes(Path(paths.archived_processed_data)) == hashes(Path(paths.processed_data)) == original
    _remount(tmp_path / "working", "rw")
    assert not archive_session(paths).copied
    assert not Path(paths.processed_data).exists()
    assert hashes(Path(paths.archived_processed_data)) == original


def test_a_read_only_storage_volume_changes_nothing_and_says_so_first(tmp_path: Path, tmpfs: Mount) -> None:
    tmpfs(tmp_path / "storage", "16m")
    paths = make_session(tmp_path, files=10)
    original = hashes(Path(paths.processed_data))
    _remount(tmp_path / "storage", "ro")
    with pytest.raises(WorkerError, match=r"^Read-only file system: cannot copy processed data to "):
        archive_session(paths)
    assert hashes(Path(paths.processed_data)) == original
    assert not Path(paths.archived_processed_data).exists()
