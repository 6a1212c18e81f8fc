"""Options shared by ``sl-server profile create`` and ``profile set``: job defaults and the password.

A password asked for with ``--password-prompt`` goes to the OS keyring (``sl-pipelines[keyring]``); it is
written into the profile file (mode 0600) only with ``--plaintext-password``.
"""

from __future__ import annotations

import argparse
import getpass

from rich.console import Console

from sl_pipelines.adapters import keyring_store, profiles
from sl_pipelines.core.notify_text import parse_target
from sl_pipelines.errors import ConfigurationError


def defaults_options(parser: argparse.ArgumentParser, *, clearing: bool = False) -> None:
    """--partition, --account, --qos, --gres (with ``clearing``, an empty value removes the default)."""
    unset = " ('' removes it)" if clearing else ""
    for option, what in (
        ("partition", "Slurm partition"),
        ("account", "Slurm account"),
        ("qos", "Slurm QOS"),
        ("gres", "generic resources, such as gpu:1,"),
    ):
        parser.add_argument(f"--{option}", help=f"{what} for jobs whose pipeline definition sets none{unset}")


def password_options(parser: argparse.ArgumentParser) -> None:
    """--password-prompt and --plaintext-password."""
    parser.add_argument(
        "--password-prompt",
        action="store_true",
        help="ask for a password (last resort after keys) and keep it in the OS keyring",
    )
    parser.add_argument(
        "--plaintext-password",
        action="store_true",
        help="with --password-prompt: keep it in the profile file (mode 0600) instead of the keyring",
    )


def asked_password(arguments: argparse.Namespace, host: str) -> dict[str, object]:
    """The password fields of a profile from --password-prompt / --plaintext-password (empty: unchanged)."""
    if arguments.plaintext_password and not arguments.password_prompt:
        raise ConfigurationError("--plaintext-password goes with --password-prompt; add it.", key="password")
    if not arguments.password_prompt:
        return {}
    password = getpass.getpass(f"Password for {host}: ")
    if not password:
        raise ConfigurationError("No password was given; nothing was changed.", key="password")
    return {"password": password, "password_in_keyring": not arguments.plaintext_password}


def set_profile(arguments: argparse.Namespace, out: Console) -> int:
    """Changes job defaults and/or the password of a saved profile; what is not given stays."""
    profile = profiles.load_profile(arguments.name, with_password=False)
    changes: dict[str, object] = {
        option: getattr(arguments, option) or None
        for option in ("partition", "account", "qos", "gres")
        if getattr(arguments, option) is not None
    }
    if getattr(arguments, "notify", None) is not None:
        targets = tuple(text.strip() for text in arguments.notify if text.strip())
        for text in targets:
            parse_target(text)  # a malformed one is refused here, not at the next run
        changes["notify"] = targets
    changes.update(asked_password(arguments, profile.host))
    if not changes:
        raise ConfigurationError(
            "Nothing to change; give --partition, --account, --qos, --gres, --notify or --password-prompt.",
            key="set",
        )
    path = profiles.save_profile(profiles.with_changes(profile, **changes))
    if profile.password_in_keyring and changes.get("password_in_keyring") is False:
        keyring_store.forget_password(profile.name)  # only once the file holds the password
    names = ("partition", "account", "qos", "gres", "notify")
    changed: list[str] = [name for name in names if name in changes]
    if "password" in changes:
        where = "in the OS keyring" if changes["password_in_keyring"] else f"in {path}"
        changed.append(f"password ({where})")
    out.print(f"Updated profile {profile.name} ({path}): {', '.join(changed)}.", markup=False)
    return 0
