"""The refused-unknown-host message tells the user which profile to trust."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from sl_pipelines.adapters.profiles import ServerProfile
from sl_pipelines.adapters.server import settings_from_profile
from sl_pipelines.adapters.ssh import SSHSettings
from sl_pipelines.adapters.ssh.hostkeys import UnknownHost, unknown_host_error


class _Key:
    """Just enough of a host key for the message (keeps this test free of key generation)."""

    def get_name(self) -> str:
        return "ssh-ed25519"

    def asbytes(self) -> bytes:
        return b"not a real key"


@pytest.mark.parametrize(("label", "named"), [("lab", "lab"), ("", "PROFILE")])
def test_unknown_host_message_names_the_profile(label: str, named: str) -> None:
    refused = UnknownHost("[h]:2222", _Key())
    error = unknown_host_error(refused, SSHSettings(host="h", label=label))
    assert f"'sl-server profile trust {named}'" in str(error)
    assert "ssh-ed25519 SHA256:" in str(error) and error.host == "h"


def test_settings_from_profile_carry_its_name() -> None:
    profile = ServerProfile(
        name="lab", host="h", storage_root=PurePosixPath("/s"), working_root=PurePosixPath("/w")
    )
    assert settings_from_profile(profile).label == "lab"
