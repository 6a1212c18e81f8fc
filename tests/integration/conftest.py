"""Integration fixtures: the real OpenSSH + Slurm testbed on 127.0.0.1 started by ``scripts/testbed.sh``.

Every test under ``tests/integration`` is marked ``integration``. The session-scoped ``testbed`` fixture
runs ``scripts/testbed.sh start`` once per session (idempotent: a few seconds when it already runs) and
never stops it: it is reused by the next session, and CI machines are thrown away.

Two clusters run on the one host (keys of ``Testbed.clusters``):

* ``acct``: Slurm cluster ``slacct`` with accounting (``sacct`` works), SSH user ``sltest``.
* ``noacct``: Slurm cluster ``slnoacct`` without accounting (``sacct`` fails), SSH user ``sltest2``.

Both users log in with ``Testbed.key_file`` or ``Testbed.password``; sshd sets their ``SLURM_CONF``.
With ``SL_TESTBED_NO_ACCOUNTING=1`` only ``noacct`` runs and ``testbed.cluster("acct")`` skips the test.

Import the helpers with ``from conftest import Testbed, TestbedCluster, ssh_run`` (this folder has no
``__init__.py``), or use the ``run_over_ssh`` fixture.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import pytest

REPO = Path(__file__).resolve().parents[2]
TESTBED_SCRIPT = REPO / "scripts" / "testbed.sh"


@dataclass(frozen=True)
class TestbedCluster:
    """One Slurm cluster of the testbed and the SSH user whose sessions see it."""

    __test__ = False  # not a test class, despite the name

    key: str  # "acct" or "noacct"
    name: str  # Slurm ClusterName: "slacct" or "slnoacct"
    user: str
    slurm_conf: Path
    storage_root: Path
    working_root: Path
    accounting: bool


@dataclass(frozen=True)
class Testbed:
    """What ``scripts/testbed.sh start`` wrote into ``<state>/testbed.json``."""

    __test__ = False

    state_dir: Path
    host: str
    port: int
    key_file: Path
    known_hosts: Path
    host_key_fingerprint: str  # "SHA256:..." of the ed25519 host key
    password: str
    server_env: Path  # venv with sl_pipelines installed; job scripts `source <server_env>/bin/activate`
    clusters: Mapping[str, TestbedCluster]

    def cluster(self, name: str) -> TestbedCluster:
        """The cluster by key ("acct", "noacct") or by Slurm cluster name ("slacct", "slnoacct")."""
        for cluster in self.clusters.values():
            if name in (cluster.key, cluster.name):
                return cluster
        pytest.skip(f"testbed cluster {name!r} is not running (started with --no-accounting?)")

    @classmethod
    def from_info(cls, info: dict[str, object]) -> Testbed:
        clusters_info = info["clusters"]
        assert isinstance(clusters_info, dict)
        clusters = {
            key: TestbedCluster(
                key=key,
                name=str(c["name"]),
                user=str(c["user"]),
                slurm_conf=Path(c["slurm_conf"]),
                storage_root=Path(c["storage_root"]),
                working_root=Path(c["working_root"]),
                accounting=bool(c["accounting"]),
            )
            for key, c in clusters_info.items()
        }
        return cls(
            state_dir=Path(str(info["state_dir"])),
            host=str(info["host"]),
            port=int(str(info["port"])),
            key_file=Path(str(info["key_file"])),
            known_hosts=Path(str(info["known_hosts"])),
            host_key_fingerprint=str(info["host_key_fingerprint"]),
            password=str(info["password"]),
            server_env=Path(str(info["server_env"])),
            clusters=MappingProxyType(clusters),
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


def _start_testbed() -> Testbed:
    if os.geteuid() != 0:
        pytest.skip("the SSH + Slurm testbed needs root (scripts/testbed.sh start)")
    result = subprocess.run(
        ["bash", str(TESTBED_SCRIPT), "start"], capture_output=True, text=True, timeout=900, check=False
    )
    if result.returncode != 0:
        pytest.fail(
            f"scripts/testbed.sh start failed ({result.returncode}):\n{result.stdout}\n{result.stderr}",
            pytrace=False,
        )
    info_path = Path(os.environ.get("SL_TESTBED_DIR", "/var/tmp/sl-testbed")) / "testbed.json"
    return Testbed.from_info(json.loads(info_path.read_text()))


@pytest.fixture(scope="session")
def testbed() -> Testbed:
    """The running testbed (started once per session, left running afterwards)."""
    return _start_testbed()


def ssh_run(
    testbed: Testbed,
    cluster: TestbedCluster | str,
    command: str,
    *,
    check: bool = False,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Runs `command` as the cluster's user through the real OpenSSH client, pinning the host key."""
    if isinstance(cluster, str):
        cluster = testbed.cluster(cluster)
    cmd = [
        "ssh",
        "-i", str(testbed.key_file),
        "-o", f"UserKnownHostsFile={testbed.known_hosts}",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes",
        "-o", "IdentitiesOnly=yes",
        "-o", "ConnectTimeout=10",
        "-p", str(testbed.port),
        f"{cluster.user}@{testbed.host}",
        command,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=check)


@pytest.fixture(scope="session")
def run_over_ssh(testbed: Testbed) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_over_ssh("acct", "squeue")``: ``ssh_run`` bound to the session's testbed (no import needed)."""
    return functools.partial(ssh_run, testbed)
