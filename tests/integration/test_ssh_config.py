"""~/.ssh/config is honoured: HostName, User, Port, IdentityFile, and ProxyJump through a real sshd."""

from __future__ import annotations

from pathlib import Path

from conftest import Testbed

from sl_pipelines.adapters.ssh import SSHSettings, SSHTransport


def _config(tmp_path: Path, testbed: Testbed) -> Path:
    acct, noacct = testbed.cluster("acct"), testbed.cluster("noacct")
    path = tmp_path / "ssh_config"
    path.write_text(
        f"Host tb-alias\n  HostName {testbed.host}\n  Port {testbed.port}\n  User {acct.user}\n"
        f"  IdentityFile {testbed.key_file}\n\n"
        f"Host tb-jumped\n  HostName {testbed.host}\n  Port {testbed.port}\n  User {noacct.user}\n"
        f"  IdentityFile {testbed.key_file}\n  ProxyJump tb-alias\n"
    )
    return path


def test_alias_from_ssh_config(testbed: Testbed, tmp_path: Path) -> None:
    settings = SSHSettings(
        host="tb-alias",
        use_agent=False,
        known_hosts=Path(testbed.known_hosts),
        ssh_config=_config(tmp_path, testbed),
    )
    with SSHTransport(settings) as transport:
        result = transport.run("whoami")
    assert result.stdout.strip() == testbed.cluster("acct").user


def test_proxy_jump_from_ssh_config(testbed: Testbed, tmp_path: Path) -> None:
    settings = SSHSettings(
        host="tb-jumped",
        use_agent=False,
        known_hosts=Path(testbed.known_hosts),
        ssh_config=_config(tmp_path, testbed),
    )
    with SSHTransport(settings) as transport:
        result = transport.run("whoami; echo $SSH_CONNECTION")
        assert len(transport._jumps) == 1, "the connection went through the jump host"
    user, connection = result.stdout.split("\n", 1)
    assert user == testbed.cluster("noacct").user
    assert connection.strip(), "the final hop is a real SSH session"
