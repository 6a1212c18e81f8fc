"""Everyday profile set-up: job defaults, and a password in the OS keyring (an in-memory keyring here).

No real OS keyring is touched: each test installs a small :class:`keyring.backend.KeyringBackend` that
keeps passwords in a dict, or keyring's own "fail" backend (what a machine without a keyring has).
"""

from __future__ import annotations

import argparse
import stat
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import keyring
import keyring.backend
import keyring.errors
import pytest
from keyring.backends import fail

from sl_pipelines.adapters import keyring_store
from sl_pipelines.adapters.notify import SmtpSettings
from sl_pipelines.adapters.profiles import (
    ServerProfile,
    delete_profile,
    load_profile,
    profile_path,
    save_profile,
)
from sl_pipelines.cli import server as cli
from sl_pipelines.cli.notify_options import build_notices
from sl_pipelines.core.job import JobDefaults
from sl_pipelines.errors import ConfigurationError

SECRET = "correct horse battery staple"


class MemoryKeyring(keyring.backend.KeyringBackend):
    """Passwords in a dict: keyring's interface without an OS keyring."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.passwords: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.passwords.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.passwords[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if self.passwords.pop((service, username), None) is None:
            raise keyring.errors.PasswordDeleteError("not found")


@pytest.fixture
def memory_keyring() -> Iterator[MemoryKeyring]:
    before = keyring.get_keyring()
    ring = MemoryKeyring()
    keyring.set_keyring(ring)
    yield ring
    keyring.set_keyring(before)


@pytest.fixture
def no_keyring() -> Iterator[None]:
    before = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    yield
    keyring.set_keyring(before)


def profile(**changes: object) -> ServerProfile:
    values: dict[str, object] = {
        "name": "lab",
        "host": "hpc.example.org",
        "storage_root": PurePosixPath("/storage"),
        "working_root": PurePosixPath("/work"),
    }
    return ServerProfile(**(values | changes))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ job defaults


def test_job_defaults_round_trip_and_reach_the_backend_property() -> None:
    save_profile(profile(partition="gpu", account="lab_a", qos="normal", gres="gpu:1"))
    loaded = load_profile("lab")
    assert loaded.job_defaults == JobDefaults("gpu", "lab_a", "normal", "gpu:1")
    assert load_profile("lab").job_defaults.items() == (
        ("partition", "gpu"),
        ("account", "lab_a"),
        ("qos", "normal"),
        ("gres", "gpu:1"),
    )


@pytest.mark.parametrize("value", ["two words", "a\nb", "x#y", ""])
def test_a_default_slurm_cannot_take_is_refused(value: str) -> None:
    with pytest.raises(ConfigurationError, match="which Slurm cannot take") as caught:
        profile(partition=value)
    assert caught.value.key == "partition"


def test_cli_create_and_set_job_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["profile", "create", "lab", "--host", "h", "--storage-root", "/s", "--working-root", "/w"]
    assert cli.main([*argv, "--partition", "main", "--qos", "normal"]) == 0
    assert load_profile("lab").job_defaults == JobDefaults(partition="main", qos="normal")
    assert cli.main(["profile", "set", "lab", "--partition", "gpu", "--gres", "gpu:2", "--qos", ""]) == 0
    assert "partition, qos, gres" in capsys.readouterr().out
    assert load_profile("lab").job_defaults == JobDefaults(partition="gpu", gres="gpu:2")
    assert cli.main(["profile", "set", "lab"]) == 2, "nothing to change is a usage error"
    assert "Nothing to change" in capsys.readouterr().err
    assert cli.main(["profile", "set", "lab", "--account", "a b"]) == 2
    assert "which Slurm cannot take" in capsys.readouterr().err
    assert load_profile("lab").job_defaults == JobDefaults(partition="gpu", gres="gpu:2"), "left as it was"


# ------------------------------------------------------------------------------------------ keyring


def test_a_keyring_password_never_reaches_the_file(memory_keyring: MemoryKeyring) -> None:
    path = save_profile(profile(password=SECRET, password_in_keyring=True))
    text = path.read_text()
    assert SECRET not in text and "password_in_keyring: true" in text
    assert memory_keyring.passwords == {(keyring_store.SERVICE, "lab"): SECRET}
    assert load_profile("lab").password == SECRET
    assert load_profile("lab", with_password=False).password is None
    save_profile(load_profile("lab"))  # a loaded profile saved again still keeps it out of the file
    assert SECRET not in path.read_text()
    delete_profile("lab")
    assert memory_keyring.passwords == {}
    assert not path.exists()


def test_a_missing_keyring_entry_says_how_to_store_it_again(memory_keyring: MemoryKeyring) -> None:
    save_profile(profile(password=SECRET, password_in_keyring=True))
    memory_keyring.passwords.clear()
    with pytest.raises(ConfigurationError, match="sl-server profile set lab --password-prompt"):
        load_profile("lab")


def test_without_a_usable_keyring_nothing_is_written(no_keyring: None) -> None:
    with pytest.raises(ConfigurationError, match="--plaintext-password") as caught:
        save_profile(profile(password=SECRET, password_in_keyring=True))
    assert "Could not store the password of profile 'lab' in the OS keyring" in str(caught.value)
    assert not profile_path("lab").exists()


def test_without_the_keyring_package_the_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "keyring", None)  # what an install without the extra has
    with pytest.raises(ConfigurationError, match=r"pip install 'sl-pipelines\[keyring\]'"):
        keyring_store.store_password("lab", SECRET)


def test_a_file_with_a_password_and_the_keyring_flag_is_refused() -> None:
    path = save_profile(profile(password=SECRET))
    path.write_text(path.read_text().replace("password_in_keyring: false", "password_in_keyring: true"))
    with pytest.raises(ConfigurationError, match="remove one of them"):
        load_profile("lab")


def test_cli_password_goes_to_the_keyring_unless_plaintext_is_asked(
    memory_keyring: MemoryKeyring, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("getpass.getpass", lambda prompt="": SECRET)
    argv = ["profile", "create", "lab", "--host", "h", "--storage-root", "/s", "--working-root", "/w"]
    assert cli.main([*argv, "--password-prompt"]) == 0
    assert SECRET not in profile_path("lab").read_text()
    assert load_profile("lab").password == SECRET
    assert cli.main(["profile", "show", "lab"]) == 0
    assert "(in the OS keyring)" in capsys.readouterr().out

    assert cli.main(["profile", "set", "lab", "--password-prompt", "--plaintext-password"]) == 0
    assert "password (in " in capsys.readouterr().out
    assert SECRET in profile_path("lab").read_text(), "asked for: plaintext in the file"
    assert stat.S_IMODE(profile_path("lab").stat().st_mode) == 0o600
    assert memory_keyring.passwords == {}, "the keyring no longer holds a copy"

    assert cli.main([*argv, "--force", "--plaintext-password"]) == 2
    assert "--plaintext-password goes with --password-prompt" in capsys.readouterr().err


def test_cli_without_keyring_refuses_and_points_to_the_flag(
    no_keyring: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr("getpass.getpass", lambda prompt="": SECRET)
    argv = ["profile", "create", "lab", "--host", "h", "--storage-root", "/s", "--working-root", "/w"]
    assert cli.main([*argv, "--password-prompt"]) == 1
    assert "--plaintext-password" in capsys.readouterr().err
    assert not profile_path("lab").exists()
    assert cli.main([*argv, "--password-prompt", "--plaintext-password"]) == 0
    assert load_profile("lab").password == SECRET


# ------------------------------------------------------------------------------------------ notifications


def _notify_args(*targets: str) -> argparse.Namespace:
    return argparse.Namespace(notify=list(targets), server="lab", stall=[])


def test_the_smtp_password_comes_from_the_keyring_and_the_profile_gives_default_targets(
    memory_keyring: MemoryKeyring,
) -> None:
    smtp = SmtpSettings(host="smtp.lab.org", user="lab", password_in_keyring=True)
    save_profile(profile(notify=("mailto:me@lab.org",), smtp=smtp))
    memory_keyring.passwords[(keyring_store.SERVICE, "lab/smtp")] = SECRET
    notices = build_notices(_notify_args(), "lab")
    assert notices is not None
    assert [t.address for t in notices.notifier.targets] == ["me@lab.org"]
    assert notices.notifier.smtp.password == SECRET
    assert SECRET not in repr(notices.notifier.smtp)
    given = build_notices(_notify_args("https://hooks.lab.org/x"), "lab")
    assert given is not None
    assert [t.address for t in given.notifier.targets] == ["https://hooks.lab.org/x"], (
        "--notify beats the profile"
    )
    memory_keyring.passwords.clear()
    with pytest.raises(ConfigurationError, match="keyring set sl_pipelines lab/smtp"):
        build_notices(_notify_args(), "lab")


def test_no_targets_anywhere_means_no_notifier() -> None:
    save_profile(profile())
    assert build_notices(_notify_args(), "lab") is None


def test_cli_sets_and_empties_the_default_notify_list(capsys: pytest.CaptureFixture[str]) -> None:
    save_profile(profile())
    hook = "https://hooks.lab.org/x"
    assert cli.main(["profile", "set", "lab", "--notify", hook, "--notify", "mailto:me@lab.org"]) == 0
    assert "notify" in capsys.readouterr().out
    assert load_profile("lab").notify == (hook, "mailto:me@lab.org")
    assert cli.main(["profile", "set", "lab", "--notify", "hooks.lab.org"]) == 2
    assert "neither a webhook URL" in capsys.readouterr().err
    assert load_profile("lab").notify == (hook, "mailto:me@lab.org"), "left as it was"
    assert cli.main(["profile", "set", "lab", "--notify", ""]) == 0
    assert load_profile("lab").notify == ()
