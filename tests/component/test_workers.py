"""The data-management workers and the demo worker on real files under tmp_path."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path, PurePosixPath

import pytest
import xxhash

from sl_pipelines.adapters.tracker_store import ProcessingTracker
from sl_pipelines.core.layout import SessionPaths
from sl_pipelines.errors import (
    ConfigurationError,
    SessionNotFoundError,
    VerificationError,
    WorkerError,
)
from sl_pipelines.vocabulary import TrackerFileNames
from sl_pipelines.workers.archiving import archive_session
from sl_pipelines.workers.checksum import CHECKSUM_FILE, calculate_checksum, resolve_checksum
from sl_pipelines.workers.demo import run_demo
from sl_pipelines.workers.demo_data import generate_project, generate_session
from sl_pipelines.workers.manifest import MANIFEST_FILE, generate_manifest, manifest_columns
from sl_pipelines.workers.preparation import prepare_session

HOSTILE = "day 1; rm -rf ~ $(touch pwned)"


def _paths(tmp_path: Path, session: str = HOSTILE, animal: str = "A 1") -> SessionPaths:
    return SessionPaths(
        PurePosixPath(tmp_path / "storage"), PurePosixPath(tmp_path / "working"), "proj", animal, session
    )


@pytest.fixture
def session(tmp_path: Path) -> SessionPaths:
    paths = _paths(tmp_path)
    generate_session(Path(paths.storage_root), paths.project, paths.animal, paths.session, size_kb=8)
    return paths


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if ".partial-" in p.name or p.name.endswith(".tmp")]


# --- demo data and checksum ------------------------------------------------------------------------


def test_generated_session_has_the_lab_layout_and_a_matching_checksum(session: SessionPaths) -> None:
    raw = Path(session.raw_data)
    assert {
        "session_data.yaml",
        CHECKSUM_FILE,
        "behavior_data/encoder.bin",
        "camera_data/face_camera.mp4",
    } <= set(_files(raw))
    assert sorted(p.name for p in (raw / "mesoscope_data").iterdir()) == [f"plane_{i}.tif" for i in range(3)]
    assert (raw / CHECKSUM_FILE).read_text().strip() == calculate_checksum(raw)
    result = resolve_checksum(session)
    assert result.checksum == result.stored and not result.written


def test_generation_is_reproducible_and_refuses_to_overwrite(tmp_path: Path) -> None:
    first = generate_session(tmp_path / "a", "p", "m", "s", size_kb=2, seed=4)
    second = generate_session(tmp_path / "b", "p", "m", "s", size_kb=2, seed=4)
    other = generate_session(tmp_path / "c", "p", "m", "s", size_kb=2, seed=5)
    assert first.checksum == second.checksum != other.checksum
    with pytest.raises(WorkerError, match="already exists"):
        generate_session(tmp_path / "a", "p", "m", "s")
    with pytest.raises(ConfigurationError):
        generate_session(tmp_path / "a", "p", "m", "bad/name")


def test_checksum_mismatch_names_the_folder_and_both_values(session: SessionPaths) -> None:
    raw = Path(session.raw_data)
    stored = (raw / CHECKSUM_FILE).read_text().strip()
    target = raw / "behavior_data" / "actor.bin"
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(VerificationError) as info:
        resolve_checksum(session)
    message = str(info.value)
    assert str(raw) in message and stored in message and calculate_checksum(raw) in message
    assert info.value.path == raw


def test_checksum_detects_a_rename_with_identical_content(session: SessionPaths) -> None:
    raw = Path(session.raw_data)
    (raw / "behavior_data" / "actor.bin").rename(raw / "behavior_data" / "actor2.bin")
    with pytest.raises(VerificationError):
        resolve_checksum(session)


def test_checksum_excludes_its_own_file(session: SessionPaths) -> None:
    raw = Path(session.raw_data)
    before = calculate_checksum(raw)
    (raw / CHECKSUM_FILE).write_text("something else\n")
    assert calculate_checksum(raw) == before


def test_missing_checksum_fails_unless_create_missing(session: SessionPaths) -> None:
    raw = Path(session.raw_data)
    (raw / CHECKSUM_FILE).unlink()
    with pytest.raises(VerificationError, match="--create-missing"):
        resolve_checksum(session)
    assert not (raw / CHECKSUM_FILE).exists()
    created = resolve_checksum(session, create_missing=True)
    assert created.written and created.stored is None
    assert (raw / CHECKSUM_FILE).read_text().strip() == created.checksum
    assert not resolve_checksum(session).written


def test_recalculate_overwrites_the_stored_checksum_atomically(session: SessionPaths) -> None:
    raw = Path(session.raw_data)
    (raw / "behavior_data" / "new.bin").write_bytes(b"extra")
    old = (raw / CHECKSUM_FILE).read_text().strip()
    result = resolve_checksum(session, recalculate=True)
    assert result.written and result.stored == old != result.checksum
    assert (raw / CHECKSUM_FILE).read_text() == result.checksum + "\n"
    assert _leftovers(raw) == []
    resolve_checksum(session)


def test_checksum_of_a_missing_session_is_session_not_found(tmp_path: Path) -> None:
    with pytest.raises(SessionNotFoundError, match="no raw data"):
        resolve_checksum(_paths(tmp_path, "nope"))


# --- preparation -----------------------------------------------------------------------------------


def test_preparation_copies_and_verifies(session: SessionPaths) -> None:
    result = prepare_session(session)
    working = Path(session.working_session) / "raw_data"
    assert result.destination == working and result.copied
    assert _files(working) == _files(Path(session.raw_data))
    assert result.checksum == calculate_checksum(working) == calculate_checksum(Path(session.raw_data))
    assert result.files == len(_files(working))
    assert _leftovers(Path(session.working_session)) == []


def test_preparation_with_a_wrong_stored_checksum_fails_and_leaves_nothing(session: SessionPaths) -> None:
    (Path(session.raw_data) / CHECKSUM_FILE).write_text("0" * 32 + "\n")
    with pytest.raises(VerificationError, match="does not match the stored checksum") as info:
        prepare_session(session)
    assert "0" * 32 in str(info.value)
    working_session = Path(session.working_session)
    assert not (working_session / "raw_data").exists()
    assert _leftovers(working_session) == []


def test_preparation_without_a_stored_checksum_copies_nothing(session: SessionPaths) -> None:
    (Path(session.raw_data) / CHECKSUM_FILE).unlink()
    with pytest.raises(VerificationError, match="checksum resolution first"):
        prepare_session(session)
    assert not Path(session.working_session).exists()


def test_preparation_refuses_while_archiving_runs(session: SessionPaths) -> None:
    ProcessingTracker(Path(session.tracker(TrackerFileNames.ARCHIVING))).start(77, 1)
    with pytest.raises(WorkerError, match="manager 77"):
        prepare_session(session)
    assert not Path(session.working_session).exists()


def test_preparation_keeps_a_verified_copy_and_replaces_a_damaged_one(session: SessionPaths) -> None:
    prepare_session(session)
    assert not prepare_session(session).copied
    working = Path(session.working_session) / "raw_data"
    (working / "telomere.bin").write_bytes(b"damaged")
    stale = Path(session.working_session) / ".partial-raw_data-1-dead"
    stale.mkdir()
    assert prepare_session(session).copied
    assert _files(working) == _files(Path(session.raw_data))
    assert _leftovers(Path(session.working_session)) == []


# --- archiving -------------------------------------------------------------------------------------


def _processed(session: SessionPaths) -> Path:
    folder = Path(session.processed_data)
    (folder / "behavior" / "runtime").mkdir(parents=True)
    (folder / "behavior" / "runtime" / "summary.json").write_text('{"ok": true}')
    (folder / "suite2p").mkdir()
    (folder / "suite2p" / "cells.bin").write_bytes(bytes(range(256)) * 40)
    return folder


def test_archiving_moves_verified_data_and_only_then_deletes(session: SessionPaths) -> None:
    source = _processed(session)
    expected = _files(source)
    checksum = calculate_checksum(source, exclude=())
    result = archive_session(session)
    archived = Path(session.archived_processed_data)
    assert _files(archived) == expected
    assert result.checksum == checksum and result.copied and result.files == 2
    assert not source.exists()
    assert _leftovers(Path(session.storage_session)) == []
    again = archive_session(session)
    assert not again.copied and _files(archived) == expected


def test_archiving_refuses_to_clobber_a_differing_archive(session: SessionPaths) -> None:
    source = _processed(session)
    working = _files(source)
    archived = Path(session.archived_processed_data)
    archived.mkdir()
    (archived / "old.txt").write_text("an older archive")
    with pytest.raises(VerificationError, match="differs from the working copy") as info:
        archive_session(session)
    assert info.value.path == archived and str(archived) in str(info.value)
    assert _files(source) == working
    assert _files(archived) == {"old.txt": b"an older archive"}


def test_archiving_over_an_identical_archive_deletes_the_working_copy(session: SessionPaths) -> None:
    source = _processed(session)
    shutil.copytree(source, Path(session.archived_processed_data))
    result = archive_session(session)
    assert not result.copied and not source.exists()


def test_archiving_refuses_while_preparation_runs(session: SessionPaths) -> None:
    source = _processed(session)
    ProcessingTracker(Path(session.tracker(TrackerFileNames.PREPARATION))).start(5, 1)
    with pytest.raises(WorkerError, match="while another pipeline runs"):
        archive_session(session)
    assert source.is_dir() and not Path(session.archived_processed_data).exists()


def test_archiving_without_processed_data_is_an_error(session: SessionPaths) -> None:
    with pytest.raises(WorkerError, match="no processed data"):
        archive_session(session)


def test_archiving_onto_itself_is_refused(session: SessionPaths) -> None:
    same = SessionPaths(session.storage_root, session.storage_root, "proj", session.animal, session.session)
    Path(same.processed_data).mkdir()
    with pytest.raises(WorkerError, match="onto itself"):
        archive_session(same)
    assert Path(same.processed_data).is_dir()


# --- manifest --------------------------------------------------------------------------------------


def test_manifest_lists_sessions_and_pipeline_states(tmp_path: Path) -> None:
    storage, working = tmp_path / "storage", tmp_path / "working"
    generate_project(storage, "proj", ["B", "A 1"], sessions=["s1", "s, 2;$(x)"], size_kb=1)
    (storage / "proj" / "B" / "empty").mkdir()
    s1, s2 = _paths(tmp_path, "s1"), _paths(tmp_path, "s, 2;$(x)")
    prepare_session(s1)
    checksum = ProcessingTracker(Path(s1.tracker(TrackerFileNames.CHECKSUM)))
    checksum.start(1, 1)
    checksum.stop(1, job="c")
    ProcessingTracker(Path(s1.tracker(TrackerFileNames.BEHAVIOR))).start(1, 7)
    ProcessingTracker(Path(s2.tracker(TrackerFileNames.SUITE2P))).start(2, 5)
    ProcessingTracker(Path(s2.tracker(TrackerFileNames.SUITE2P))).error(2, job="plane-1", reason="x")
    Path(s2.tracker(TrackerFileNames.VIDEO)).write_text("status: [this is not a tracker")

    path, rows = generate_manifest(storage, working, "proj")

    assert path == storage / "proj" / MANIFEST_FILE
    with path.open(newline="") as stream:
        table = list(csv.DictReader(stream))
    assert tuple(table[0]) == manifest_columns()
    assert [(r["animal"], r["session"]) for r in table] == [
        ("A 1", "s, 2;$(x)"),
        ("A 1", "s1"),
        ("B", "empty"),
        ("B", "s, 2;$(x)"),
        ("B", "s1"),
    ]
    first, second, empty = table[1], table[0], table[2]
    assert (first["has_raw_data"], first["prepared"]) == ("true", "true")
    assert (first["checksum"], first["behavior"], first["archiving"]) == ("succeeded", "running", "idle")
    assert (second["prepared"], second["suite2p"], second["video"]) == ("false", "failed", "corrupt")
    assert empty["has_raw_data"] == "false"
    assert [r.as_record() for r in rows] == table
    assert _leftovers(storage / "proj") == []


def test_manifest_of_a_missing_project_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(WorkerError, match="Project 'nope' does not exist"):
        generate_manifest(tmp_path, tmp_path, "nope")


# --- demo worker -----------------------------------------------------------------------------------


def test_demo_part_summarises_its_inputs_and_writes_a_derived_file(session: SessionPaths) -> None:
    result = run_demo(session, pipeline="behavior", part="face camera", inputs=["camera_data/face*"])
    assert result.output == Path(session.processed_data) / "behavior" / "face camera"
    summary = json.loads((result.output / "summary.json").read_text())
    source = Path(session.raw_data) / "camera_data" / "face_camera.mp4"
    data = source.read_bytes()
    assert summary["session"] == HOSTILE
    assert summary["inputs"] == [
        {
            "path": "camera_data/face_camera.mp4",
            "size": len(data),
            "xxh3_128": xxhash.xxh3_128_hexdigest(data),
        }
    ]
    derived = (result.output / "derived.bin").read_bytes()
    assert derived == xxhash.xxh3_128_digest(data) + data[:4096][::-1]


def test_demo_reads_the_prepared_working_copy_when_there_is_one(session: SessionPaths) -> None:
    prepare_session(session)
    (Path(session.working_session) / "raw_data" / "behavior_data" / "runtime.bin").write_bytes(b"working")
    result = run_demo(session, pipeline="behavior", part="runtime", inputs=["behavior_data/runtime*"])
    assert json.loads((result.output / "summary.json").read_text())["inputs"][0]["size"] == len(b"working")


@pytest.mark.parametrize(
    ("inputs", "error", "match"),
    [
        (["camera_data/none*"], WorkerError, "No raw file matches"),
        (["/etc/*"], ConfigurationError, "must be relative"),
        (["../*"], ConfigurationError, "without '..'"),
    ],
)
def test_demo_input_patterns_are_checked(
    session: SessionPaths, inputs: list[str], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        run_demo(session, pipeline="video", part="x", inputs=inputs)
    assert not Path(session.processed_data).exists()


def test_demo_fail_writes_nothing_and_sleeps_in_small_steps(session: SessionPaths) -> None:
    steps: list[float] = []
    with pytest.raises(WorkerError, match="failed as asked: disk on fire"):
        run_demo(session, pipeline="video", part="x", seconds=0.35, fail="disk on fire", sleep=steps.append)
    assert max(steps) <= 0.1 and sum(steps) == pytest.approx(0.35)
    assert not Path(session.processed_data).exists()


def test_suite2p_parts_run_only_in_order(session: SessionPaths) -> None:
    base = Path(session.processed_data) / "suite2p"
    with pytest.raises(WorkerError, match="binarization must succeed"):
        run_demo(session, pipeline="suite2p", part="plane", planes=3, plane=1)
    with pytest.raises(WorkerError, match="Planes 0, 1, 2 of 3"):
        run_demo(session, pipeline="suite2p", part="combine", planes=3)

    run_demo(session, pipeline="suite2p", part="binarize", planes=3, inputs=["mesoscope_data/*"])
    tifs = sorted((Path(session.raw_data) / "mesoscope_data").glob("*.tif"))
    for i in range(3):
        expected = b"".join(t.read_bytes()[i::3] for t in tifs)
        assert (base / "binarize" / "binary" / f"plane_{i}.bin").read_bytes() == expected

    run_demo(session, pipeline="suite2p", part="plane", planes=3, plane=0)
    run_demo(session, pipeline="suite2p", part="plane", planes=3, plane=2)
    with pytest.raises(WorkerError, match="Planes 1 of 3"):
        run_demo(session, pipeline="suite2p", part="combine", planes=3)
    run_demo(session, pipeline="suite2p", part="plane", planes=3, plane=1)
    result = run_demo(session, pipeline="suite2p", part="combine", planes=3)
    cells = b"".join((base / f"plane_{i}" / "cells.bin").read_bytes() for i in range(3))
    assert (result.output / "combined.bin").read_bytes() == cells and cells


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"part": "binarize", "inputs": ["mesoscope_data/*"]}, "needs the number of planes"),
        ({"part": "binarize", "planes": 2}, "needs raw inputs"),
        ({"part": "plane", "planes": 2, "plane": 2}, "between 0 and 1"),
        ({"part": "plane", "planes": 0, "plane": 0}, "at least 1"),
        ({"part": "../x"}, "one plain folder name"),
    ],
)
def test_demo_rejects_bad_arguments_before_any_work(
    session: SessionPaths, kwargs: dict[str, object], match: str
) -> None:
    steps: list[float] = []
    with pytest.raises(ConfigurationError, match=match):
        run_demo(session, pipeline="suite2p", seconds=1.0, sleep=steps.append, **kwargs)  # type: ignore[arg-type]
    assert steps == []
