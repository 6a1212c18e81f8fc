"""sl-server against the real testbed: create, show, trust, check, delete."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from conftest import Testbed

from sl_pipelines.adapters.profiles import load_profile, profile_path
from sl_pipelines.cli import server as cli


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
    assert _create(testbed, Path(testbed.known_hosts), "--password-prompt") == 0
    assert load_profile("tb").password == testbed.password
    capsys.readouterr()
    assert cli.main(["profile", "show", "tb"]) == 0
    out = capsys.readouterr().out
    assert testbed.password not in out
