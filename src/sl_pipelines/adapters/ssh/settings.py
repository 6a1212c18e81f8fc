"""Where and how to reach a server: :class:`SSHSettings`, and the endpoint after ``~/.ssh/config``.

``~/.ssh/config`` is honoured (HostName, User, Port, IdentityFile, ProxyJump); explicit settings win
over the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import paramiko

USER_KNOWN_HOSTS = Path("~/.ssh/known_hosts")
SYSTEM_KNOWN_HOSTS = (Path("/etc/ssh/ssh_known_hosts"), USER_KNOWN_HOSTS)


@dataclass(frozen=True)
class SSHSettings:
    """How to reach a server; usually built from a profile with ``settings_from_profile``.

    Attributes:
        host: host name or ``~/.ssh/config`` alias.
        port, user, key_file: override ``~/.ssh/config`` when given.
        use_agent: try ssh-agent keys (after the key file, before the password).
        password: last resort; never shown.
        known_hosts: the profile's known_hosts file (read with the system files; new keys go here).
        trust_unknown_hosts: accept and record an unknown host key instead of refusing it.
        connect_timeout: seconds for TCP connect, banner and authentication.
        command_timeout: default seconds a remote command may take; also the longest wait without
            progress of an SFTP request, a stream or a channel opening.
        ssh_config: the OpenSSH client configuration to honour (None: ignore it).
        system_known_hosts: the system/user known_hosts files to read.
        remote_python: the Python used on the server to list and hash trees.
        label: the profile these settings came from, named in messages ("" when not from a profile).
    """

    host: str
    port: int | None = None
    user: str | None = None
    key_file: Path | None = None
    use_agent: bool = True
    password: str | None = field(default=None, repr=False)
    known_hosts: Path | None = None
    trust_unknown_hosts: bool = False
    connect_timeout: float = 10.0
    command_timeout: float = 60.0
    ssh_config: Path | None = Path("~/.ssh/config")
    system_known_hosts: tuple[Path, ...] = SYSTEM_KNOWN_HOSTS
    remote_python: str = "python3"
    label: str = ""


@dataclass(frozen=True)
class Endpoint:
    """Where a connection really goes, after ``~/.ssh/config`` was applied."""

    hostname: str
    port: int
    user: str
    key_files: tuple[Path, ...]
    proxy_jump: str | None

    @property
    def known_hosts_name(self) -> str:
        """The name under which known_hosts records this host (``[host]:port`` unless port 22)."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


def resolve_endpoint(settings: SSHSettings, host: str | None = None) -> Endpoint:
    """Applies ``~/.ssh/config`` to a host; explicit settings win over the file."""
    host = host or settings.host
    looked_up: dict[str, object] = {}
    config_path = settings.ssh_config.expanduser() if settings.ssh_config else None
    if config_path is not None and config_path.is_file():
        looked_up = dict(paramiko.SSHConfig.from_path(str(config_path)).lookup(host))
    explicit = host == settings.host
    port = settings.port if explicit and settings.port else int(str(looked_up.get("port", 22)))
    user = (settings.user if explicit else None) or str(looked_up.get("user") or _local_user())
    files = [settings.key_file] if explicit and settings.key_file else []
    identity = looked_up.get("identityfile")
    files += [Path(item).expanduser() for item in (identity if isinstance(identity, list) else [])]
    jump = looked_up.get("proxyjump")
    return Endpoint(
        hostname=str(looked_up.get("hostname", host)),
        port=port,
        user=user,
        key_files=tuple(files),
        proxy_jump=str(jump) if jump and str(jump).lower() != "none" else None,
    )


def _local_user() -> str:
    import getpass  # noqa: PLC0415 - only needed when neither the profile nor ssh config names a user

    return getpass.getuser()
