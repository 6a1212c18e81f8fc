"""Prepares the demo on the testbed: a server profile named ``testbed`` and the demo sessions on the server.

Called by ``scripts/demo.sh --testbed`` after the testbed has started; takes the path of its info file.
The profile is written into ``$SL_PIPELINES_CONFIG_DIR`` (the demo's own folder); sessions that
already exist on the server are reused, never overwritten.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from testbed_profile import testbed_profile

from sl_pipelines.adapters.profiles import save_profile
from sl_pipelines.adapters.server import Server

SESSIONS = ("day1", "day2")
ANIMALS = ("A1", "A2")


def main(info_path: str) -> None:
    info = json.loads(Path(info_path).read_text())
    cluster = "acct" if "acct" in info["clusters"] else "noacct"
    profile, _ = testbed_profile(cluster, name="testbed", info=info)
    print(f"Server profile 'testbed' written to {save_profile(profile)}")
    with Server(profile) as server:
        if "demo" in server.list_dir(server.storage_root):
            print(f"Reusing the demo project under {server.storage_root}/demo on the server.")
            return
        command = f"source {shlex.quote(profile.environment.value)}/bin/activate && sl-worker generate"
        command += f" --storage-root {shlex.quote(str(server.storage_root))} --project demo --planes 3"
        command += "".join(f" --animal {a}" for a in ANIMALS) + "".join(f" --session {s}" for s in SESSIONS)
        server.run(command, check=True)
        print(f"Generated the demo project under {server.storage_root}/demo on the server.")


if __name__ == "__main__":
    main(sys.argv[1])
