"""Host-key checking: known_hosts files, the refusing policy, fingerprints, recording a key.

Host keys are checked against the system files, the user's ``~/.ssh/known_hosts`` and the profile's
own file: an unknown host is refused unless the profile trusts unknown hosts, and a changed key is
always refused. Fetching a server's key without logging in is
:func:`sl_pipelines.adapters.ssh.connection.fetch_host_key` (it dials like any connection).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import shlex
from pathlib import Path

import paramiko

from sl_pipelines.adapters.ssh.settings import USER_KNOWN_HOSTS, SSHSettings
from sl_pipelines.errors import HostKeyMismatchError, UnknownHostKeyError

_log = logging.getLogger("sl_pipelines")


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint of a host key (``SHA256:...``)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def record_host_key(known_hosts: Path, name: str, key: paramiko.PKey) -> None:
    """Appends ``key`` for ``name`` to a known_hosts file, as OpenSSH writes it (a plain host line).

    A missing file is created with mode 0600 (and a missing ``~/.ssh`` with mode 0700).
    """
    path = known_hosts.expanduser()
    if not path.parent.is_dir():
        path.parent.mkdir(mode=0o700, parents=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(descriptor, "a", encoding="utf-8") as handle:
        handle.write(f"{name} {key.get_name()} {key.get_base64()}\n")


def trust_target(settings: SSHSettings) -> Path:
    """Where a trusted key is recorded: the profile's known_hosts file, else ``~/.ssh/known_hosts``."""
    return settings.known_hosts or USER_KNOWN_HOSTS


def recorded_key(settings: SSHSettings, name: str, key: paramiko.PKey) -> tuple[Path, paramiko.PKey] | None:
    """The key of ``key``'s type recorded for ``name`` in a known_hosts file that connections read.

    Returns the file and the recorded key (equal to ``key``, or a changed one), or None when the host
    is unknown. Hashed and plain host lines are both found.
    """
    files = [*settings.system_known_hosts, *([settings.known_hosts] if settings.known_hosts else [])]
    for path in (file.expanduser() for file in files):
        if not path.is_file():
            continue
        entry = paramiko.HostKeys(str(path)).lookup(name)
        if entry is not None and key.get_name() in entry:
            return path, entry[key.get_name()]
    return None


def changed_key_refusal(
    name: str, path: Path, recorded: paramiko.PKey, offered: paramiko.PKey
) -> HostKeyMismatchError:
    """The error of ``trust`` for a host whose recorded key differs from the one it offers now."""
    return HostKeyMismatchError(
        f"Not recorded: the host key of {name} has CHANGED ({path} holds {fingerprint(recorded)}, the "
        f"server now offers {fingerprint(offered)}), and a changed key is always refused; ask whoever runs "
        "the server whether it was reinstalled and which fingerprint is right, and only then remove the old "
        f"line with 'ssh-keygen -R {shlex.quote(name)} -f {shlex.quote(str(path))}' and trust it again.",
        host=name,
    )


def load_known_hosts(client: paramiko.SSHClient, settings: SSHSettings) -> None:
    """Loads the system, user and profile known_hosts files and installs the refusing policy."""
    for path in settings.system_known_hosts:
        if path.expanduser().is_file():
            client.load_system_host_keys(str(path.expanduser()))
    if settings.known_hosts and settings.known_hosts.expanduser().is_file():
        client.load_host_keys(str(settings.known_hosts.expanduser()))
    client.set_missing_host_key_policy(HostKeyPolicy(settings))


class UnknownHost(Exception):
    """Raised by :class:`HostKeyPolicy` inside paramiko; translated by :func:`unknown_host_error`."""

    def __init__(self, name: str, key: paramiko.PKey) -> None:
        super().__init__(name)
        self.name = name
        self.key = key


class HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Refuses unknown hosts, or records them in the profile's file when the profile trusts them."""

    def __init__(self, settings: SSHSettings) -> None:
        self._settings = settings

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if not self._settings.trust_unknown_hosts or self._settings.known_hosts is None:
            raise UnknownHost(hostname, key)
        record_host_key(self._settings.known_hosts, hostname, key)
        _log.warning(
            "Recorded the unknown host key %s of %s (profile trusts unknown hosts)",
            fingerprint(key),
            hostname,
        )


def unknown_host_error(exc: UnknownHost, settings: SSHSettings) -> UnknownHostKeyError:
    """The user-facing error for a refused unknown host; names the profile to trust when known."""
    profile = settings.label or "PROFILE"
    return UnknownHostKeyError(
        f"The host key of {exc.name} ({exc.key.get_name()} {fingerprint(exc.key)}) is not in any "
        "known_hosts file, so the connection was refused; if this fingerprint is right, record it "
        f"with 'sl-server profile trust {profile}' (or ssh-keyscan into the profile's known_hosts).",
        host=settings.host,
    )


def host_key_mismatch_error(exc: paramiko.BadHostKeyException, host: str) -> HostKeyMismatchError:
    """The user-facing error for a host key that differs from the recorded one."""
    return HostKeyMismatchError(
        f"The host key of {exc.hostname} has CHANGED: known_hosts expects "
        f"{fingerprint(exc.expected_key)} but the server offered {fingerprint(exc.key)}, so the "
        "connection was refused; if the server was reinstalled, remove the old known_hosts entry "
        "and trust the new key, otherwise tell your administrator.",
        host=host,
    )
