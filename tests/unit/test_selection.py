"""Choosing sessions: patterns, timestamp names, filters, and the selection program run in real bash."""

from __future__ import annotations

import subprocess
from datetime import date, datetime
from pathlib import Path, PurePosixPath

import pytest

from sl_pipelines.core.layout import SessionPaths
from sl_pipelines.core.selection import (
    Filters,
    SessionTrackers,
    build_select,
    choose,
    is_pattern,
    parse_day,
    parse_select,
    pattern_parts,
    session_time,
)
from sl_pipelines.core.session_query import FoundSession
from sl_pipelines.core.tracker_state import TrackerState, record_completion, start_run
from sl_pipelines.core.tracker_text import dump_tracker_text
from sl_pipelines.errors import ConfigurationError, ServerError

TRACKER = "checksum_resolution_tracker.yaml"
_NOW, _PATH = "2026-01-06T10:00:00+00:00", PurePosixPath(TRACKER)
COMPLETE = dump_tracker_text(
    record_completion(start_run(TrackerState(), 7, 1, now=_NOW, path=_PATH), 7, "j", now=_NOW, path=_PATH)
)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("proj/*/*", True), ("proj/A?/s", True), ("proj/[AB]1/s", True), ("proj/A1/2026-01-05", False)],
)
def test_a_pattern_is_told_from_one_session(spec: str, expected: bool) -> None:
    assert is_pattern(spec) is expected


@pytest.mark.parametrize("spec", ["proj/*", "proj/*/*/*", "proj/../*", "proj//*", "./*/*"])
def test_a_pattern_must_be_three_names_inside_the_storage_root(spec: str) -> None:
    with pytest.raises(ConfigurationError, match="must be project/animal/session"):
        pattern_parts(spec)


def test_pattern_parts_ignore_surrounding_slashes() -> None:
    assert pattern_parts("/proj/A1/*/") == ("proj", "A1", "*")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("2026-01-05-10-20-30", datetime(2026, 1, 5, 10, 20, 30)),
        ("2026-01-05", datetime(2026, 1, 5)),
        ("2026-02-30-10-00-00", None),
        ("pilot", None),
    ],
)
def test_session_names_that_are_timestamps_give_their_time(name: str, expected: datetime | None) -> None:
    assert session_time(name) == expected


def test_a_day_that_is_not_a_date_names_the_option() -> None:
    assert parse_day("2026-01-05", "--since") == date(2026, 1, 5)
    with pytest.raises(ConfigurationError, match=r"--until '5\.1\.2026' is not a date"):
        parse_day("5.1.2026", "--until")


def _found(session: str, tracker: str | None = None) -> SessionTrackers:
    paths = SessionPaths(PurePosixPath("/s"), PurePosixPath("/w"), "proj", "A1", session)
    return SessionTrackers(FoundSession(paths, None), {TRACKER: tracker} if tracker is not None else {})


def test_filters_keep_what_they_name_and_say_why_each_other_session_was_left_out() -> None:
    found = [
        _found("2026-01-02-10-00-00"),
        _found("2026-01-04-10-00-00", COMPLETE),
        _found("2026-01-05-10-00-00"),
        _found("2026-01-05-10-00-01", "not: [a tracker"),
        _found("2026-01-09-10-00-00"),
        _found("pilot"),
    ]
    chosen, skipped = choose(
        found, TRACKER, Filters(since=date(2026, 1, 3), until=date(2026, 1, 6), pending=True)
    )
    assert [s.paths.session for s in chosen] == ["2026-01-05-10-00-00", "2026-01-05-10-00-01"]
    assert dict(skipped) == {
        "proj/A1/2026-01-02-10-00-00": "before 2026-01-03",
        "proj/A1/2026-01-04-10-00-00": "already complete",
        "proj/A1/2026-01-09-10-00-00": "after 2026-01-06",
        "proj/A1/pilot": "its name is not a date",
    }
    chosen, skipped = choose(found, TRACKER, Filters(failed=True))
    assert chosen == []
    assert dict(skipped)["proj/A1/2026-01-05-10-00-01"] == "its last run did not fail (corrupt)"
    assert dict(skipped)["proj/A1/pilot"] == "its last run did not fail (idle)"


@pytest.mark.parametrize("reader", [True, False], ids=["python3", "bash"])
def test_the_selection_program_finds_sessions_with_raw_data_and_their_trackers(
    tmp_path: Path, reader: bool
) -> None:
    root = tmp_path / "storage"
    for animal, session in [("A1", "s1"), ("A1", "s2"), ("A2", "s1"), ("A2", "x1")]:
        (root / "proj" / animal / session / "raw_data").mkdir(parents=True)
    (root / "proj" / "A1" / "no-raw").mkdir(parents=True)  # not a session
    (root / "proj" / "A1" / "s1" / "tracking_data").mkdir()
    (root / "proj" / "A1" / "s1" / "tracking_data" / TRACKER).write_text(COMPLETE)
    (root / "proj" / "A1" / "s1" / "raw_data" / "session_data.yaml").write_text("planes: 2\n")
    weird = root / "proj" / "A2" / "s1 ;$(touch x)"
    (weird / "raw_data").mkdir(parents=True)
    command, data = build_select(PurePosixPath(root), pattern_parts("proj/*/s*"), [TRACKER], reader=reader)
    done = subprocess.run(["sh", "-c", command], input=data, capture_output=True, check=True, cwd=tmp_path)
    found = parse_select(done.stdout.decode(), PurePosixPath(root), PurePosixPath("/w"))
    assert [(s.paths.animal, s.paths.session) for s in found] == [
        ("A1", "s1"),
        ("A1", "s2"),
        ("A2", "s1"),
        ("A2", "s1 ;$(touch x)"),
    ]
    assert found[0].trackers == {TRACKER: COMPLETE}
    assert found[0].session.session_data == "planes: 2\n"
    assert found[1].trackers == {} and found[1].session.session_data is None
    assert not (tmp_path / "x").exists()


def test_a_selection_whose_output_is_cut_chooses_nothing(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    for session in ("s1", "s2"):
        (root / "proj" / "A1" / session / "raw_data").mkdir(parents=True)
    command, data = build_select(PurePosixPath(root), pattern_parts("proj/*/*"), [TRACKER])
    done = subprocess.run(["sh", "-c", command], input=data, capture_output=True, check=True)
    text = done.stdout.decode()
    assert len(parse_select(text, PurePosixPath(root), PurePosixPath("/w"))) == 2
    cut = text[: text.rindex("begin done")]  # a reader that died after the first sessions
    with pytest.raises(ServerError, match="stopped before its end"):
        parse_select(cut, PurePosixPath(root), PurePosixPath("/w"))
