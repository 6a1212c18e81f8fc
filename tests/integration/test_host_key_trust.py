"""``sl-server profile trust`` as the README shows it, against the real sshd, with a temporary HOME.

A profile made without ``--known-hosts`` records the key in ``~/.ssh/known_hosts``, in OpenSSH's own
format, after showing the fingerprint; without a terminal it asks for ``--yes``; a changed key is
refused, with what to check and how to remove the old line.
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Testbed

from sl_pipelines.cli import server as cli


class FakeTerminal(io.StringIO):
    """Stdin as a person at a terminal, answering with the given text."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sl_config_dir: Path) -> Path:
    """A HOME of the test's own (no ~/.ssh yet) and a profile 'tb' created WITHOUT --known-hosts."""
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("HOME", str(folder))
    return folder


def _create(testbed: Testbed, known_hosts: Path | None = None) -> None:
    cluster = testbed.cluster("noacct")
    argv = ["profile", "create", "tb", "--host", testbed.host, "--port", str(testbed.port)]
    argv += ["--known-hosts", str(known_hosts)] if known_hosts else []
    argv += ["--user", cluster.user, "--key-file", str(testbed.key_file), "--no-agent"]
    argv += ["--storage-root", str(cluster.storage_root), "--working-root", str(cluster.working_root)]
    assert cli.main([*argv, "--venv", str(testbed.server_env)]) == 0


def _words(text: str) -> str:
    return " ".join(text.split())


def test_trust_records_the_key_in_the_users_known_hosts_as_ssh_does(
    testbed: Testbed, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _create(testbed)
    capsys.readouterr()
    assert cli.main(["profile", "check", "tb"]) == 1
    assert "record it with 'sl-server profile trust tb'" in _words(capsys.readouterr().out)

    assert cli.main(["profile", "trust", "tb", "--yes"]) == 0
    out = capsys.readouterr().out
    assert testbed.host_key_fingerprint in out and "Recorded" in out
    known = home / ".ssh" / "known_hosts"
    host_line = f"[{testbed.host}]:{testbed.port}"
    assert known.read_text().splitlines() == [Path(testbed.known_hosts).read_text().strip()]
    assert known.read_text().startswith(f"{host_line} ssh-ed25519 ")
    assert stat.S_IMODE(known.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(known.stat().st_mode) == 0o600
    subprocess.run(["ssh-keygen", "-F", host_line, "-f", str(known)], capture_output=True, check=True)
    ssh = ["ssh", "-i", str(testbed.key_file), "-o", f"UserKnownHostsFile={known}", "-o", "BatchMode=yes"]
    ssh += ["-o", "StrictHostKeyChecking=yes", "-p", str(testbed.port), f"sltest2@{testbed.host}", "true"]
    subprocess.run(ssh, capture_output=True, timeout=30, check=True)  # OpenSSH itself accepts the line

    assert cli.main(["profile", "check", "tb"]) == 0
    capsys.readouterr()
    subprocess.run(["ssh-keygen", "-H", "-f", str(known)], capture_output=True, check=True)  # hash it
    hashed = known.read_text()
    assert cli.main(["profile", "trust", "tb", "--yes"]) == 0
    assert "already trusted" in capsys.readouterr().out
    assert known.read_text() == hashed, "nothing recorded twice"


@pytest.mark.parametrize("profile_file", [False, True], ids=["user known_hosts", "profile known_hosts"])
def test_trust_without_a_terminal_asks_for_yes(testbed: Testbed, home: Path, profile_file: bool) -> None:
    known = home / "profile_known_hosts" if profile_file else home / ".ssh" / "known_hosts"
    _create(testbed, known if profile_file else None)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "sl-server"), "profile", "trust", "tb"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert testbed.host_key_fingerprint in done.stdout
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: Nothing recorded: there is no terminal")
    assert line.endswith("then run 'sl-server profile trust tb --yes'.")
    assert not known.exists()


@pytest.mark.parametrize(("answer", "code"), [("y\n", 0), ("n\n", 1), ("", 1)])
def test_trust_asks_on_a_terminal(
    testbed: Testbed, home: Path, monkeypatch: pytest.MonkeyPatch, answer: str, code: int
) -> None:
    _create(testbed)
    monkeypatch.setattr(sys, "stdin", FakeTerminal(answer))
    assert cli.main(["profile", "trust", "tb"]) == code
    assert (home / ".ssh" / "known_hosts").exists() is (code == 0)


@pytest.mark.parametrize("profile_file", [False, True], ids=["user known_hosts", "profile known_hosts"])
def test_trust_refuses_a_changed_key_and_says_what_to_do(
    testbed: Testbed, home: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path, profile_file: bool
) -> None:
    known = home / "profile_known_hosts" if profile_file else home / ".ssh" / "known_hosts"
    _create(testbed, known if profile_file else None)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other = " ".join((tmp_path / "other.pub").read_text().split()[:2])
    known.parent.mkdir(mode=0o700, exist_ok=True)
    host_line = f"[{testbed.host}]:{testbed.port}"
    known.write_text(f"{host_line} {other}\n")
    capsys.readouterr()

    assert cli.main(["profile", "trust", "tb", "--yes"]) == 1
    captured = capsys.readouterr()
    assert "Recorded" not in captured.out
    error = _words(captured.err)
    assert error.startswith("error: Not recorded: the host key of")
    assert "has CHANGED" in error and "a changed key is always refused" in error
    assert testbed.host_key_fingerprint in error
    assert f"ssh-keygen -R '{host_line}' -f {known}" in error
    assert known.read_text() == f"{host_line} {other}\n"
    assert cli.main(["profile", "check", "tb"]) == 1, "the connection stays refused"

    subprocess.run(["ssh-keygen", "-R", host_line, "-f", str(known)], capture_output=True, check=True)
    assert cli.main(["profile", "trust", "tb", "--yes"]) == 0
    assert cli.main(["profile", "check", "tb"]) == 0
