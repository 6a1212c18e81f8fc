"""``sl-server push`` before anything is sent: the local folder, its checksum file, names and arguments.

Everything here is refused or decided on this computer, so the profile points at a port where nothing
listens: a test that tried to connect would fail with "Cannot reach".
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest

from sl_pipelines.adapters.profiles import ServerProfile, save_profile
from sl_pipelines.adapters.upload import check_names, scan_local
from sl_pipelines.cli import server as cli
from sl_pipelines.cli.push import _then_command, raw_data_folder
from sl_pipelines.core.layout import SessionPaths
from sl_pipelines.errors import ConfigurationError, TransferError, VerificationError
from sl_pipelines.workers.checksum import CHECKSUM_FILE, calculate_checksum


class Recorder:
    """Collects the progress an upload reports."""

    def __init__(self) -> None:
        self.stages: list[tuple[str, int, int]] = []
        self.advanced = 0

    def stage(self, description: str, total: int, completed: int = 0) -> None:
        self.stages.append((description, total, completed))

    def advance(self, amount: int) -> None:
        self.advanced += amount


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    folder = tmp_path / "2026-01-05-10-00-00" / "raw_data"
    (folder / "frames").mkdir(parents=True)
    (folder / "frames" / "f0.bin").write_bytes(os.urandom(5000))
    (folder / "behavior.csv").write_text("t,x\n0,1\n")
    (folder / "empty-folder").mkdir()
    return folder


@pytest.fixture
def nowhere() -> str:
    profile = ServerProfile(
        name="nowhere",
        host="127.0.0.1",
        port=1,
        use_agent=False,
        storage_root=PurePosixPath("/storage"),
        working_root=PurePosixPath("/work"),
    )
    save_profile(profile)
    return profile.name


def test_the_local_session_is_hashed_as_the_checksum_pipeline_does(raw: Path) -> None:
    progress = Recorder()
    local = scan_local(raw, progress)
    assert local.checksum == calculate_checksum(raw)
    assert sorted(local.files) == ["behavior.csv", "frames/f0.bin"]
    assert set(local.dirs) == {"frames", "empty-folder"}
    assert progress.stages == [("hashing", local.size_bytes, 0)] and progress.advanced == local.size_bytes


def test_a_matching_checksum_file_is_accepted_and_left_out_of_the_data(raw: Path) -> None:
    (raw / CHECKSUM_FILE).write_text(calculate_checksum(raw) + "\n")
    local = scan_local(raw, Recorder())
    assert CHECKSUM_FILE not in local.files
    assert local.checksum == calculate_checksum(raw)


def test_a_local_checksum_file_that_does_not_match_stops_the_upload(raw: Path) -> None:
    (raw / CHECKSUM_FILE).write_text("0" * 32 + "\n")
    with pytest.raises(VerificationError, match=r"does not match its own ax_checksum\.txt") as caught:
        scan_local(raw, Recorder())
    assert "nothing was uploaded" in str(caught.value)


@pytest.mark.parametrize("kind", ["link to a folder", "empty", "missing"])
def test_a_folder_that_cannot_be_uploaded_is_named(raw: Path, kind: str) -> None:
    folder = raw
    if kind == "link to a folder":
        (raw / "elsewhere").symlink_to(raw.parent)
        words = "neither a file nor a folder"
    elif kind == "empty":
        folder = raw.parent / "nothing"
        folder.mkdir()
        words = "holds no files to upload"
    else:
        folder = raw.parent / "typo"
        words = "is not a folder on this computer"
    with pytest.raises(TransferError, match=words):
        scan_local(folder, Recorder())


@pytest.mark.parametrize(
    ("project", "animal", "session"),
    [("", "A1", "s"), ("p", "A/1", "s"), ("p", "A1", ".."), ("p", "A1", ".hidden"), ("p", "A1", "s\n")],
)
def test_names_that_are_not_one_folder_are_refused(project: str, animal: str, session: str) -> None:
    with pytest.raises(ConfigurationError, match="is not a usable"):
        check_names(SessionPaths(PurePosixPath("/s"), PurePosixPath("/w"), project, animal, session))


def test_the_session_folder_or_its_raw_data_give_the_same_upload(raw: Path) -> None:
    session = raw.parent
    assert raw_data_folder(session) == (raw, session.name)
    assert raw_data_folder(raw) == (raw, session.name)
    flat = session.parent / "flat-session"
    flat.mkdir()
    assert raw_data_folder(flat) == (flat, "flat-session")


def test_bad_arguments_exit_2_before_connecting(
    raw: Path, nowhere: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["push", str(raw.parent), "--server", nowhere, "--project", "p", "--animal", "A1"]
    assert cli.main([*base, "--then", "no-such-pipeline"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--then" in err and "not a workflow either (workflows: lab-daily, quick)" in err
    assert cli.main([*base, "--session", "../escape"]) == 2
    assert "not a usable session name" in capsys.readouterr().err
    assert cli.main(["push", str(raw.parent), "--server", nowhere]) == 2, "project and animal are required"


def test_then_runs_a_pipeline_or_a_workflow() -> None:
    assert _then_command("checksum") == ["checksum"]
    assert _then_command("lab-daily") == ["--workflow", "lab-daily"]
    assert _then_command(None) == []
