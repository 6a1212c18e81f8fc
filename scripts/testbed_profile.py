"""The server profile of a testbed cluster, read from the testbed's info file (for scripts only).

from testbed_profile import testbed_profile      # scripts/ is on sys.path for scripts run from it
profile, info = testbed_profile("acct", name="bench")
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

from sl_pipelines.adapters.profiles import ServerProfile
from sl_pipelines.core.job import Environment, EnvironmentKind


def testbed_info(state: Path | None = None) -> dict[str, Any]:
    """The testbed's info file (``$SL_TESTBED_DIR/testbed.json``, default /var/tmp/sl-testbed)."""
    folder = state or Path(os.environ.get("SL_TESTBED_DIR", "/var/tmp/sl-testbed"))
    info: dict[str, Any] = json.loads((folder / "testbed.json").read_text())
    return info


def testbed_profile(
    cluster: str, *, name: str, info: dict[str, Any] | None = None, command_timeout: float = 300.0
) -> tuple[ServerProfile, dict[str, Any]]:
    """A key-authenticated profile of cluster ``acct`` or ``noacct``, and the info it came from."""
    data = info or testbed_info()
    c = data["clusters"][cluster]
    profile = ServerProfile(
        name=name,
        host=str(data["host"]),
        port=int(data["port"]),
        user=c["user"],
        key_file=Path(data["key_file"]),
        use_agent=False,
        known_hosts=Path(data["known_hosts"]),
        storage_root=PurePosixPath(c["storage_root"]),
        working_root=PurePosixPath(c["working_root"]),
        environment=Environment(EnvironmentKind.VENV, str(data["server_env"])),
        command_timeout=command_timeout,
    )
    return profile, data
