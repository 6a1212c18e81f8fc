"""A profile's password in the OS keyring (the optional ``keyring`` package: ``sl-pipelines[keyring]``).

The password is stored under the service :data:`SERVICE` with the profile's name as the user name; the
profile file then says only ``password_in_keyring: true``. ``keyring`` is imported on first use, so the
package works without it as long as no profile keeps its password there. Every keyring failure becomes
one :class:`~sl_pipelines.errors.ConfigurationError` sentence that says what to do.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from sl_pipelines.errors import ConfigurationError

#: The keyring service under which profile passwords are stored.
SERVICE = "sl_pipelines"
_INSTALL = "install it with pip install 'sl-pipelines[keyring]'"


def _keyring() -> ModuleType:
    try:
        return importlib.import_module("keyring")
    except ImportError as exc:
        raise ConfigurationError(
            f"Keeping a password in the OS keyring needs the keyring package, which is not installed; "
            f"{_INSTALL}, or keep the password in the profile file with --plaintext-password."
        ) from exc


def _failed(action: str, profile: str, exc: Exception) -> ConfigurationError:
    detail = " ".join(str(exc).split()) or type(exc).__name__
    return ConfigurationError(
        f"Could not {action} the password of profile {profile!r} in the OS keyring ({detail}); unlock or "
        "set up a keyring (see 'keyring --list-backends'), or keep the password in the profile file with "
        "--plaintext-password."
    )


def store_password(profile: str, password: str) -> None:
    """Stores ``password`` for ``profile`` in the OS keyring.

    Raises:
        ConfigurationError: keyring is not installed, or no usable keyring accepted the password.
    """
    keyring = _keyring()
    try:
        keyring.set_password(SERVICE, profile, password)
    except keyring.errors.KeyringError as exc:
        raise _failed("store", profile, exc) from exc


def fetch_password(profile: str) -> str:
    """The password of ``profile`` from the OS keyring.

    Raises:
        ConfigurationError: keyring is not installed or not usable, or holds no password for the profile.
    """
    missing = (
        f"The OS keyring holds no password for profile {profile!r} (service {SERVICE!r}); store it "
        f"again with 'sl-server profile set {profile} --password-prompt'."
    )
    return _fetch(profile, profile, missing)


def _fetch(user: str, profile: str, missing: str) -> str:
    """The keyring's password of ``user`` under :data:`SERVICE`; ``missing`` is the error when it has none."""
    keyring = _keyring()
    try:
        password: str | None = keyring.get_password(SERVICE, user)
    except keyring.errors.KeyringError as exc:
        raise _failed("read", profile, exc) from exc
    if not password:
        raise ConfigurationError(missing)
    return password


def forget_password(profile: str) -> None:
    """Removes the password of ``profile`` from the OS keyring; one that is not there is not an error.

    Raises:
        ConfigurationError: keyring is not installed or not usable.
    """
    keyring = _keyring()
    try:
        keyring.delete_password(SERVICE, profile)
    except keyring.errors.PasswordDeleteError:
        return
    except keyring.errors.KeyringError as exc:
        raise _failed("remove", profile, exc) from exc


def fetch_smtp_password(profile: str) -> str:
    """The SMTP password of ``profile``'s notifications from the OS keyring (user ``<profile>/smtp``).

    Raises:
        ConfigurationError: keyring is not installed or not usable, or holds no such password.
    """
    user = f"{profile}/smtp"
    missing = (
        f"The OS keyring holds no SMTP password for profile {profile!r} (service {SERVICE!r}, user "
        f"{user!r}); store it with 'keyring set {SERVICE} {user}'."
    )
    return _fetch(user, profile, missing)
