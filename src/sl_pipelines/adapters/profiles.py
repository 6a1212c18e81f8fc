"""Server profiles: how to reach one Slurm server and where things live on it, saved as YAML.

Profiles live in ``platformdirs.user_config_dir("sl_pipelines")/servers/<name>.yaml`` (the folder can
be moved with the ``SL_PIPELINES_CONFIG_DIR`` environment variable). Files are written with mode
0600 through a temporary file and an atomic rename, because a profile may hold a password. A password
kept in the OS keyring (``password_in_keyring``, see :mod:`.keyring_store`) is never written to the
file. The password never appears in ``repr``/``str`` of a profile nor in any message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

import platformdirs
import yaml

from sl_pipelines.adapters import keyring_store
from sl_pipelines.adapters.locks import LockKind
from sl_pipelines.adapters.notify import SmtpSettings
from sl_pipelines.core.job import Environment, EnvironmentKind, JobDefaults
from sl_pipelines.core.script import is_slurm_word
from sl_pipelines.errors import ConfigurationError

CONFIG_DIR_VARIABLE = "SL_PIPELINES_CONFIG_DIR"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class AccountingChoice(StrEnum):
    """Where finished jobs are looked up: detected at connect time, or forced."""

    AUTO = "auto"
    SACCT = "sacct"
    SCONTROL = "scontrol"


@dataclass(frozen=True)
class ServerProfile:
    """How to reach one server and where things live on it.

    Attributes:
        name: the profile's name (its file name without ``.yaml``).
        host: host name or ``~/.ssh/config`` alias.
        port: SSH port; None takes it from ``~/.ssh/config`` or 22.
        user: login name; None takes it from ``~/.ssh/config`` or the local user name.
        key_file: private key to try first.
        use_agent: whether to try the keys of a running ssh-agent.
        password: last-resort password (never shown).
        known_hosts: an extra known_hosts file, read with the system and user files, and where
            ``sl-server profile trust`` records the server's key.
        trust_unknown_hosts: accept and record an unknown host key (off by default).
        storage_root: the slow, large volume (raw data, trackers).
        working_root: the fast volume (processing output, job folders).
        environment: what job scripts activate; it must provide ``sl-tracker`` and ``sl-worker``.
        accounting: ``auto`` (detect), ``sacct`` or ``scontrol``.
        tracker_lock: the tracker lock type on the server.
        connect_timeout: seconds to wait for the connection and authentication.
        command_timeout: default seconds a remote command may take, and how long an SFTP request or a
            transfer stream may wait without progress before giving up (RemoteTimeoutError).
        partition, account, qos, gres: Slurm options for every job whose pipeline definition leaves
            them unset (see :attr:`job_defaults`).
        password_in_keyring: the password lives in the OS keyring, not in the file; :func:`load_profile`
            fetches it.
        notify: where run notifications go when ``sl-process`` is given no ``--notify`` (webhook URLs,
            ``mailto:`` addresses).
        smtp: how notification e-mails go out (host, port, from, user, starttls, password file or keyring).
    """

    name: str
    host: str
    storage_root: PurePosixPath
    working_root: PurePosixPath
    port: int | None = None
    user: str | None = None
    key_file: Path | None = None
    use_agent: bool = True
    password: str | None = field(default=None, repr=False)
    known_hosts: Path | None = None
    trust_unknown_hosts: bool = False
    environment: Environment = field(default_factory=Environment)
    accounting: AccountingChoice = AccountingChoice.AUTO
    tracker_lock: LockKind = LockKind.FILE
    connect_timeout: float = 10.0
    command_timeout: float = 60.0
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gres: str | None = None
    password_in_keyring: bool = False
    notify: tuple[str, ...] = ()
    smtp: SmtpSettings | None = None

    def __post_init__(self) -> None:
        check_profile_name(self.name)
        if not self.host.strip():
            raise ConfigurationError(f"Profile {self.name!r} has no host; set one.", key="host")
        for key in ("storage_root", "working_root"):
            if not getattr(self, key).is_absolute():
                raise ConfigurationError(
                    f"Profile {self.name!r} has a relative {key} ({getattr(self, key)}); make it absolute.",
                    key=key,
                )
        if self.port is not None and not 0 < self.port < 65536:
            raise ConfigurationError(f"Profile {self.name!r} has port {self.port}; use 1-65535.", key="port")
        for key, value in self.job_defaults.items():
            if not is_slurm_word(value):
                raise ConfigurationError(
                    f"Profile {self.name!r} has {key} {value!r}, which Slurm cannot take; use letters, "
                    "digits and . , : = + - _ only.",
                    key=key,
                )

    @property
    def job_defaults(self) -> JobDefaults:
        """The partition, account, qos and gres of jobs whose pipeline definition leaves them unset."""
        return JobDefaults(self.partition, self.account, self.qos, self.gres)

    @property
    def has_password(self) -> bool:
        """True when a password is stored (the password itself is never shown)."""
        return bool(self.password)

    def to_mapping(self) -> dict[str, Any]:
        """The profile as plain YAML-ready data (including a plaintext password, for saving only)."""
        data: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "password" and self.password_in_keyring:
                value = None  # it lives in the OS keyring, never in the file
            if isinstance(value, SmtpSettings):
                value = value.to_mapping()
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Environment):
                value = {"kind": value.kind.value, "value": value.value, "modules": list(value.modules)}
            elif isinstance(value, StrEnum):
                value = value.value
            elif isinstance(value, PurePosixPath | Path):
                value = str(value)
            data[item.name] = value
        return data

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, name: str, path: Path | None = None) -> ServerProfile:
        """Builds a profile from YAML data, naming the file and key of anything wrong.

        Raises:
            ConfigurationError: an unknown key, a missing required key, or a value of the wrong type.
        """
        known = {item.name for item in fields(cls)}
        where = f" in {path}" if path else ""
        for key in data:
            if key not in known:
                raise ConfigurationError(
                    f"Unknown key {key!r}{where}; the keys are: {', '.join(sorted(known))}.",
                    path=path,
                    key=key,
                )
        for key in ("host", "storage_root", "working_root"):
            if not data.get(key):
                raise ConfigurationError(
                    f"Profile {name!r}{where} needs {key!r}; add it.", path=path, key=key
                )
        values = {key: _convert(key, data[key], where, path) for key in data if key != "name"}
        try:
            return cls(name=name, **values)
        except ConfigurationError as exc:
            raise ConfigurationError(
                f"{exc}{where and ' (' + where.strip() + ')'}", path=path, key=exc.key
            ) from exc


def _convert(key: str, value: Any, where: str, path: Path | None) -> Any:
    """Converts one YAML value to the field's type."""
    try:
        return _CONVERTERS.get(key, _text)(value)
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigurationError(
            f"Key {key!r}{where} has an invalid value {value!r} ({exc}); fix it.", path=path, key=key
        ) from exc


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected text")
    return value


def _optional(convert: Any) -> Any:
    return lambda value: None if value is None else convert(value)


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("expected true or false")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise TypeError("expected a positive number of seconds")
    return float(value)


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("expected a whole number")
    return value


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError("expected a list")
    return value


def _mapping(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError("expected a mapping")
    return value


def _environment(value: Any) -> Environment:
    if not isinstance(value, Mapping):
        raise TypeError("expected a mapping with kind, value and modules")
    unknown = set(value) - {"kind", "value", "modules"}
    if unknown:
        raise KeyError(f"unknown environment keys {sorted(unknown)}")
    modules = value.get("modules") or []
    if not isinstance(modules, list) or not all(isinstance(item, str) for item in modules):
        raise TypeError("modules must be a list of names")
    return Environment(
        kind=EnvironmentKind(value.get("kind", "none")),
        value=_text(value.get("value", "")),
        modules=tuple(modules),
    )


_CONVERTERS: dict[str, Any] = {
    "port": _optional(_integer),
    "user": _optional(_text),
    "key_file": _optional(lambda value: Path(_text(value)).expanduser()),
    "use_agent": _boolean,
    "password": _optional(_text),
    "known_hosts": _optional(lambda value: Path(_text(value)).expanduser()),
    "trust_unknown_hosts": _boolean,
    "storage_root": lambda value: PurePosixPath(_text(value)),
    "working_root": lambda value: PurePosixPath(_text(value)),
    "environment": _environment,
    "accounting": AccountingChoice,
    "tracker_lock": LockKind,
    "connect_timeout": _number,
    "command_timeout": _number,
    "partition": _optional(_text),
    "account": _optional(_text),
    "qos": _optional(_text),
    "gres": _optional(_text),
    "password_in_keyring": _boolean,
    "notify": lambda value: tuple(_text(item) for item in _list(value)),
    "smtp": _optional(lambda value: SmtpSettings.from_mapping(_mapping(value))),
}


# ------------------------------------------------------------------------------------------ storage


def check_profile_name(name: str) -> str:
    """Returns ``name`` when it can name a profile file, else raises ConfigurationError."""
    if not _NAME.match(name):
        raise ConfigurationError(
            f"{name!r} is not a valid profile name; use letters, digits, '.', '_' and '-'.", key="name"
        )
    return name


def profiles_dir() -> Path:
    """The folder holding the profile files (``$SL_PIPELINES_CONFIG_DIR/servers`` when set)."""
    root = os.environ.get(CONFIG_DIR_VARIABLE) or platformdirs.user_config_dir("sl_pipelines")
    return Path(root) / "servers"


def profile_path(name: str) -> Path:
    """The file of the named profile."""
    return profiles_dir() / f"{check_profile_name(name)}.yaml"


def list_profiles() -> tuple[str, ...]:
    """Names of the saved profiles, sorted."""
    folder = profiles_dir()
    if not folder.is_dir():
        return ()
    return tuple(sorted(path.stem for path in folder.glob("*.yaml") if _NAME.match(path.stem)))


def load_profile(name: str, *, with_password: bool = True) -> ServerProfile:
    """Reads the named profile; a password kept in the OS keyring is fetched unless ``with_password`` is
    False (listing and showing profiles never need it).

    Raises:
        ConfigurationError: the profile does not exist or its file is invalid (names file and key), or
            its password should be in the keyring and cannot be read from there.
    """
    path = profile_path(name)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigurationError(
            f"There is no server profile {name!r} (no {path}); create it with 'sl-server profile create'.",
            path=path,
        ) from exc
    except OSError as exc:
        raise ConfigurationError(f"Cannot read profile file {path}: {exc.strerror}.", path=path) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigurationError(
            f"Profile file {path} is not valid YAML ({exc}); fix or recreate it.", path=path
        ) from exc
    if not isinstance(data, Mapping):
        raise ConfigurationError(
            f"Profile file {path} does not hold a mapping of keys; recreate it.", path=path
        )
    profile = ServerProfile.from_mapping(data, name=name, path=path)
    if profile.password_in_keyring and profile.password:
        raise ConfigurationError(
            f"Profile file {path} holds a password and says it is in the OS keyring; remove one of them.",
            path=path,
            key="password",
        )
    if profile.password_in_keyring and with_password:
        return replace(profile, password=keyring_store.fetch_password(name))
    return profile


def save_profile(profile: ServerProfile, *, overwrite: bool = True) -> Path:
    """Writes the profile with mode 0600 (temporary file + atomic rename); returns its path.

    With ``password_in_keyring`` the password goes to the OS keyring first (nothing is written when
    that fails) and never into the file.

    Raises:
        ConfigurationError: the profile exists and ``overwrite`` is False, the file cannot be written,
            or the keyring refused the password.
    """
    path = profile_path(profile.name)
    if path.exists() and not overwrite:
        raise ConfigurationError(
            f"Profile {profile.name!r} already exists ({path}); delete it first or choose another name.",
            path=path,
        )
    if profile.password_in_keyring and profile.password:
        keyring_store.store_password(profile.name, profile.password)
    text = yaml.safe_dump(profile.to_mapping(), sort_keys=False)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise ConfigurationError(f"Cannot write profile file {path}: {exc.strerror}.", path=path) from exc
    return path


def delete_profile(name: str) -> None:
    """Deletes the named profile, and its password from the OS keyring when it is kept there.

    Raises:
        ConfigurationError: there is no such profile, or its keyring password cannot be removed (then the
            file stays).
    """
    path = profile_path(name)
    if path.is_file() and _keeps_password_in_keyring(name):
        keyring_store.forget_password(name)
    try:
        path.unlink()
    except FileNotFoundError as exc:
        raise ConfigurationError(
            f"There is no server profile {name!r} to delete ({path}).", path=path
        ) from exc


def _keeps_password_in_keyring(name: str) -> bool:
    try:
        return load_profile(name, with_password=False).password_in_keyring
    except ConfigurationError:
        return False  # an unreadable profile file is deleted all the same


def with_changes(profile: ServerProfile, **changes: Any) -> ServerProfile:
    """Returns a copy of ``profile`` with the given fields changed (validated again)."""
    return replace(profile, **changes)
