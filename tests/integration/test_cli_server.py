"""sl-server against the real testbed: create, show, trust, check, delete."""

from __future__ import annotations

import json
import shlex
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Testbed

from sl_pipelines.adapters.profiles import ServerProfile, load_profile, profile_path, save_profile
from sl_pipelines.adapters.server import Server
from sl_pipelines.cli import server as cli
from sl_pipelines.cli import tracker as tracker_cli
from sl_pipelines.core.seams import TrackerAction, TrackerOperation, TrackerOutcome
from sl_pipelines.core.tracker_text import parse_tracker_text


def _create(testbed: Testbed, known_hosts: Path, *extra: str) -> int:
    cluster = testbed.cluster("acct")
    argv = ["profile", "create", "tb", "--host", testbed.host, "--port", str(testbed.port)]
    argv += ["--user", cluster.user, "--key-file", str(testbed.key_file), "--no-agent"]
    argv += ["--known-hosts", str(known_hosts), "--storage-root", str(cluster.storage_root)]
    argv += ["--working-root", str(cluster.working_root), "--venv", str(testbed.server_env), *extra]
    return cli.main(argv)


def test_profile_lifecycle(
    testbed: Testbed, sl_config_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    known_hosts = tmp_path / "known_hosts"
    assert _create(testbed, known_hosts) == 0
    assert stat.S_IMODE(profile_path("tb").stat().st_mode) == 0o600
    assert _create(testbed, known_hosts) == 1, "an existing profile is not overwritten without --force"
    capsys.readouterr()

    assert cli.main(["profile", "check", "tb"]) == 1, "the host key is not trusted yet"
    out = " ".join(capsys.readouterr().out.split())
    assert "sl-server profile trust tb" in out

    assert cli.main(["profile", "trust", "tb", "--yes"]) == 0
    assert testbed.host_key_fingerprint in capsys.readouterr().out
    assert "ssh-ed25519" in known_hosts.read_text()

    assert cli.main(["profile", "check", "tb"]) == 0
    out = capsys.readouterr().out
    assert "sinfo" in out
    assert "sacct" in out

    assert cli.main(["profile", "list"]) == 0
    assert "tb" in capsys.readouterr().out
    assert cli.main(["profile", "delete", "tb"]) == 0
    assert cli.main(["profile", "show", "tb"]) == 2 or not profile_path("tb").exists()


def test_show_masks_the_password(
    testbed: Testbed,
    sl_config_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("getpass.getpass", lambda prompt="": testbed.password)
    assert _create(testbed, Path(testbed.known_hosts), "--password-prompt", "--plaintext-password") == 0
    assert load_profile("tb").password == testbed.password
    capsys.readouterr()
    assert cli.main(["profile", "show", "tb"]) == 0
    out = capsys.readouterr().out
    assert testbed.password not in out


def test_remote_tracker_status_and_abort_over_ssh(
    testbed: Testbed,
    make_profile: Callable[..., ServerProfile],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SL_PIPELINES_DATA_DIR", str(tmp_path / "data"))
    profile = make_profile("noacct", name="remote-tracker")
    save_profile(profile)
    session = f"remote-{tmp_path.name}"
    with Server(profile) as server:
        env = shlex.quote(profile.environment.value)
        root = shlex.quote(str(profile.storage_root))
        server.run(
            f"source {env}/bin/activate && sl-worker generate -q --storage-root {root} --project rt "
            f"--animal A1 --session {session}",
            check=True,
        )
        tracker_path = (
            profile.storage_root / "rt" / "A1" / session / "tracking_data" / "video_processing_tracker.yaml"
        )
        claim = TrackerOperation(TrackerAction.CLAIM, tracker_path, 77, job_count=3)
        assert server.update_trackers([claim]) == (TrackerOutcome(ok=True),)
        try:
            assert tracker_cli.main(["--server", profile.name, "status", session, "--json"]) == 0
            rows = {row["pipeline"]: row for row in json.loads(capsys.readouterr().out)}
            assert rows["video"]["manager_id"] == 77
            assert rows["video"]["running"] is True
            code = tracker_cli.main(
                ["--server", profile.name, "abort", session, "--pipeline", "video", "--yes"]
            )
            assert code == 0
            assert "held a running run of manager 77" in capsys.readouterr().out
            text = server.read_text(tracker_path)
            assert text is not None
            assert parse_tracker_text(text, path=tracker_path).manager_id is None
        finally:
            server.remove(profile.storage_root / "rt")
