"""Server profiles: YAML round trip, file mode, validation messages, and a password that never shows."""

from __future__ import annotations

import logging
import stat
from pathlib import Path, PurePosixPath

import pytest

from sl_pipelines.adapters.locks import LockKind
from sl_pipelines.adapters.notify import SmtpSettings
from sl_pipelines.adapters.profiles import (
    AccountingChoice,
    ServerProfile,
    delete_profile,
    list_profiles,
    load_profile,
    profile_path,
    profiles_dir,
    save_profile,
)
from sl_pipelines.core.job import Environment, EnvironmentKind
from sl_pipelines.errors import ConfigurationError

SECRET = "hunter2-very-secret"


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SL_PIPELINES_CONFIG_DIR", str(tmp_path / "config"))
    return tmp_path / "config"


def full_profile(**changes: object) -> ServerProfile:
    values: dict[str, object] = {
        "name": "lab-cluster",
        "host": "cbsu.example.org",
        "port": 2222,
        "user": "ab123",
        "key_file": Path("/home/ab/.ssh/id_ed25519"),
        "use_agent": False,
        "password": SECRET,
        "known_hosts": Path("/home/ab/.config/sl/known_hosts"),
        "storage_root": PurePosixPath("/storage/lab"),
        "working_root": PurePosixPath("/workdir/lab"),
        "environment": Environment(EnvironmentKind.CONDA, "sl-env", modules=("cuda/12",)),
        "accounting": AccountingChoice.SCONTROL,
        "tracker_lock": LockKind.SOFT,
        "connect_timeout": 5.0,
        "command_timeout": 30.0,
    }
    values.update(changes)
    return ServerProfile(**values)  # type: ignore[arg-type]


def test_round_trip(config_dir: Path) -> None:
    profile = full_profile()
    path = save_profile(profile)
    assert path == config_dir / "servers" / "lab-cluster.yaml" == profile_path("lab-cluster")
    assert load_profile("lab-cluster") == profile
    assert list_profiles() == ("lab-cluster",)


def test_notification_settings_round_trip_without_a_password(config_dir: Path) -> None:
    smtp = SmtpSettings(
        host="smtp.lab.org",
        port=587,
        sender="runs@lab.org",
        user="lab",
        starttls=True,
        password_in_keyring=True,
    )
    profile = full_profile(notify=("https://hooks.lab.org/x", "mailto:me@lab.org"), smtp=smtp)
    path = save_profile(profile)
    assert load_profile("lab-cluster") == profile
    text = path.read_text()
    assert "from: runs@lab.org" in text
    assert "password_in_keyring: true" in text
    assert load_profile("lab-cluster").smtp == smtp


def test_file_is_private_and_replaced_atomically() -> None:
    path = save_profile(full_profile())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    save_profile(full_profile(host="other.example.org"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_profile("lab-cluster").host == "other.example.org"
    assert [p.name for p in path.parent.iterdir()] == ["lab-cluster.yaml"]


def test_password_never_shows(caplog: pytest.LogCaptureFixture) -> None:
    profile = full_profile()
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("sl_pipelines").info("profile %s / %r", profile, profile)
    assert SECRET not in repr(profile)
    assert SECRET not in str(profile)
    assert SECRET not in caplog.text
    assert profile.has_password


def test_minimal_file_gets_defaults(config_dir: Path) -> None:
    (config_dir / "servers").mkdir(parents=True)
    (config_dir / "servers" / "mini.yaml").write_text("host: h\nstorage_root: /s\nworking_root: /w\n")
    profile = load_profile("mini")
    assert (profile.port, profile.user, profile.use_agent, profile.trust_unknown_hosts) == (
        None,
        None,
        True,
        False,
    )
    assert profile.accounting is AccountingChoice.AUTO and profile.tracker_lock is LockKind.FILE


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("host: h\nstorage_root: /s\nworking_root: /w\nprot: 22\n", "prot", "Unknown key 'prot'"),
        ("storage_root: /s\nworking_root: /w\n", "host", "needs 'host'"),
        ("host: h\nstorage_root: /s\nworking_root: /w\nport: twenty\n", "port", "whole number"),
        ("host: h\nstorage_root: /s\nworking_root: /w\nport: 70000\n", "port", "1-65535"),
        ("host: h\nstorage_root: s\nworking_root: /w\n", "storage_root", "absolute"),
        ("host: h\nstorage_root: /s\nworking_root: /w\naccounting: maybe\n", "accounting", "maybe"),
        ("host: h\nstorage_root: /s\nworking_root: /w\nuse_agent: 'yes'\n", "use_agent", "true or false"),
        (
            "host: h\nstorage_root: /s\nworking_root: /w\nenvironment: {kind: venv, path: /x}\n",
            "environment",
            "path",
        ),
        ("host: h\nstorage_root: /s\nworking_root: /w\ncommand_timeout: -1\n", "command_timeout", "positive"),
        ("host: h\nstorage_root: /s\nworking_root: /w\nnotify: https://x\n", "notify", "expected a list"),
        ("host: h\nstorage_root: /s\nworking_root: /w\nsmtp: {hots: x}\n", "smtp", "unknown smtp key 'hots'"),
        ("host: h\nstorage_root: /s\nworking_root: /w\nsmtp: {port: 0}\n", "smtp", "1-65535"),
    ],
)
def test_bad_file_names_file_and_key(config_dir: Path, text: str, key: str, words: str) -> None:
    (config_dir / "servers").mkdir(parents=True)
    path = config_dir / "servers" / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigurationError) as caught:
        load_profile("bad")
    assert caught.value.key == key
    assert str(path) in str(caught.value)
    assert words in str(caught.value)


@pytest.mark.parametrize("text", ["host: [unclosed\n", "- just\n- a list\n"])
def test_unreadable_yaml_names_the_file(config_dir: Path, text: str) -> None:
    (config_dir / "servers").mkdir(parents=True)
    (config_dir / "servers" / "bad.yaml").write_text(text)
    with pytest.raises(ConfigurationError, match=r"bad\.yaml"):
        load_profile("bad")


def test_missing_profile_says_how_to_create_it() -> None:
    with pytest.raises(ConfigurationError, match="sl-server profile create"):
        load_profile("nope")


@pytest.mark.parametrize("name", ["", "../evil", ".hidden", "a/b", "with space"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigurationError):
        full_profile(name=name)


def test_delete_and_overwrite_protection() -> None:
    save_profile(full_profile())
    with pytest.raises(ConfigurationError, match="already exists"):
        save_profile(full_profile(), overwrite=False)
    delete_profile("lab-cluster")
    assert list_profiles() == ()
    with pytest.raises(ConfigurationError, match="no server profile"):
        delete_profile("lab-cluster")


def test_config_dir_follows_the_environment(config_dir: Path) -> None:
    assert profiles_dir() == config_dir / "servers"
