"""Integration fixtures: the real OpenSSH + Slurm testbed on 127.0.0.1 started by ``scripts/testbed.sh``.

Every test under ``tests/integration`` is marked ``integration``. The session-scoped ``testbed`` fixture
runs ``scripts/testbed.sh start`` once per session (idempotent: a few seconds when it already runs) and
never stops it: it is reused by the next session, and CI machines are thrown away.

Two clusters run on the one host (keys of ``Testbed.clusters``):

* ``acct``: Slurm cluster ``slacct`` with accounting (``sacct`` works), SSH user ``sltest``.
* ``noacct``: Slurm cluster ``slnoacct`` without accounting (``sacct`` fails), SSH user ``sltest2``.

A third user, ``sltest3``, uses ``slnoacct`` with its own roots: ``testbed.cluster("chatty")`` (also
``make_profile("chatty")``, ``make_server("chatty")``). Its ``~/.bashrc`` prints a banner before Debian's
"not interactive: return" line, so every remote command's output starts with it; ``~/.profile`` prints too.

The users log in with ``Testbed.key_file`` or ``Testbed.password``; sshd sets their ``SLURM_CONF``.
With ``SL_TESTBED_NO_ACCOUNTING=1`` only ``noacct`` runs and ``testbed.cluster("acct")`` skips the test.

Outages and broken sessions, on this instance only: ``testbed.stop_daemons("slurmctld-slnoacct")`` and
``testbed.start_daemons()`` (which works while jobs run), or ``with testbed.outage("munged"): ...``;
``testbed.sshd_session_pids()`` lists the per-connection sshd processes to SIGKILL or SIGSTOP.

Import the helpers with ``from conftest import Testbed, TestbedCluster, ssh_run`` (this folder has no
``__init__.py``), or use the ``run_over_ssh`` fixture.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator, Mapping
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
    chatty: TestbedCluster | None = None  # slnoacct as sltest3, whose ~/.bashrc and ~/.profile print

    def stop_daemons(self, *names: str) -> None:
        """Stops daemons of this testbed only (``slurmctld-slnoacct``, ``munged``, ``slurmdbd``, ``sshd``).

        Jobs keep running: slurmstepd does not depend on slurmctld, munged or slurmdbd.
        """
        assert names, "name the daemons to stop"
        _testbed_command("stop", *names)

    def start_daemons(self) -> None:
        """Brings back every stopped daemon, also while jobs run, and waits until the clusters answer."""
        _testbed_command("start")

    @contextlib.contextmanager
    def outage(self, *names: str) -> Iterator[None]:
        """``with testbed.outage("slurmctld-slacct"):`` the daemons are down in the block, back after it."""
        self.stop_daemons(*names)
        try:
            yield
        finally:
            self.start_daemons()

    def sshd_sessions(self) -> dict[int, list[int]]:
        """Each per-connection sshd process of THIS testbed's sshd (a child of its listener) and the
        processes below it (the session's own sshd, the shell and the command).

        Kill a session's processes all at once: a session sshd whose parent died runs on, orphaned.
        """
        listener = int((self.state_dir / "run" / "sshd.pid").read_text().split()[0])
        return {session: [session, *_descendants(session)] for session in _children(listener)}

    def sshd_session_pids(self, client_port: int | None = None) -> list[int]:
        """The per-connection sshd processes of THIS testbed's sshd (below its listener, never it).

        With ``client_port`` only those of the connection from that local port: the sshd processes that
        hold its socket. Signal them to break (SIGKILL) or stall (SIGSTOP, then SIGCONT) open sessions;
        new connections still work because the listener is left alone.
        """
        found = [pid for pids in self.sshd_sessions().values() for pid in pids]
        if client_port is None:
            return found
        sockets = {f"socket:[{inode}]" for inode in _tcp_inodes(self.port, client_port)}
        return [pid for pid in found if sockets & _open_files(pid)]

    def cluster(self, name: str) -> TestbedCluster:
        """The cluster by key ("acct", "noacct") or by Slurm cluster name ("slacct", "slnoacct").

        ``"chatty"`` is the cluster ``slnoacct`` as the user whose login scripts print a banner.
        """
        for cluster in self.clusters.values():
            if name in (cluster.key, cluster.name):
                return cluster
        if name == "chatty" and self.chatty is not None:
            return self.chatty
        pytest.skip(f"testbed cluster {name!r} is not running (started with --no-accounting?)")

    @classmethod
    def from_info(cls, info: dict[str, object]) -> Testbed:
        clusters_info = info["clusters"]
        assert isinstance(clusters_info, dict)
        clusters = {key: _cluster_from_info(key, c) for key, c in clusters_info.items()}
        chatty = info.get("chatty")
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
            chatty=_cluster_from_info("chatty", chatty) if isinstance(chatty, dict) else None,
        )


def _children(pid: int) -> list[int]:
    listing = Path(f"/proc/{pid}/task/{pid}/children")
    with contextlib.suppress(OSError):
        return [int(child) for child in listing.read_text().split()]
    return []


def _descendants(pid: int) -> list[int]:
    found, todo = [], _children(pid)
    while todo:
        child = todo.pop()
        found.append(child)
        todo += _children(child)
    return found


def _tcp_inodes(local_port: int, remote_port: int) -> set[str]:
    """Socket inodes of the TCP connections from ``local_port`` to ``remote_port`` (on 127.0.0.1)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == local_port and int(fields[2].split(":")[1], 16) == remote_port:
            inodes.add(fields[9])
    return inodes


def _open_files(pid: int) -> set[str]:
    with contextlib.suppress(OSError):
        return {os.readlink(entry) for entry in Path(f"/proc/{pid}/fd").iterdir()}
    return set()


def _cluster_from_info(key: str, c: dict[str, object]) -> TestbedCluster:
    return TestbedCluster(
        key=key,
        name=str(c["name"]),
        user=str(c["user"]),
        slurm_conf=Path(str(c["slurm_conf"])),
        storage_root=Path(str(c["storage_root"])),
        working_root=Path(str(c["working_root"])),
        accounting=bool(c["accounting"]),
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


def _testbed_command(*arguments: str) -> None:
    """Runs ``scripts/testbed.sh`` on the instance that SL_TESTBED_* names; its failure fails the test."""
    result = subprocess.run(
        ["bash", str(TESTBED_SCRIPT), *arguments], capture_output=True, text=True, timeout=900, check=False
    )
    if result.returncode != 0:
        pytest.fail(
            f"scripts/testbed.sh {' '.join(arguments)} failed ({result.returncode}):\n{result.stdout}\n"
            f"{result.stderr}",
            pytrace=False,
        )


def _start_testbed() -> Testbed:
    if os.geteuid() != 0:
        pytest.skip("the SSH + Slurm testbed needs root (scripts/testbed.sh start)")
    _testbed_command("start")
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


# ==================================================================================================
# Server fixtures (issue 3, parts 2-4): profiles and Servers for both clusters.
# Profiles are saved under a per-test SL_PIPELINES_CONFIG_DIR, never in the user's real config folder.
# ==================================================================================================

from pathlib import PurePosixPath  # noqa: E402

from sl_pipelines.adapters.profiles import AccountingChoice, ServerProfile  # noqa: E402
from sl_pipelines.adapters.server import Server  # noqa: E402
from sl_pipelines.core.job import Environment, EnvironmentKind  # noqa: E402


@pytest.fixture
def sl_config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private SL_PIPELINES_CONFIG_DIR for the test."""
    folder = tmp_path / "sl-config"
    monkeypatch.setenv("SL_PIPELINES_CONFIG_DIR", str(folder))
    return folder


@pytest.fixture
def make_profile(testbed: Testbed, sl_config_dir: Path) -> Callable[..., ServerProfile]:
    """``make_profile("acct", password=..., key_file=None)``: a key-authenticated profile of a cluster."""

    def build(cluster_key: str, **changes: object) -> ServerProfile:
        cluster = testbed.cluster(cluster_key)
        values: dict[str, object] = {
            "name": f"testbed-{cluster.key}",
            "host": testbed.host,
            "port": testbed.port,
            "user": cluster.user,
            "key_file": testbed.key_file,
            "use_agent": False,
            "known_hosts": testbed.known_hosts,
            "storage_root": PurePosixPath(str(cluster.storage_root)),
            "working_root": PurePosixPath(str(cluster.working_root)),
            "environment": Environment(EnvironmentKind.VENV, str(testbed.server_env)),
            "accounting": AccountingChoice.AUTO,
            "command_timeout": 120.0,
        }
        values.update(changes)
        return ServerProfile(**values)  # type: ignore[arg-type]

    return build


@pytest.fixture
def make_server(make_profile: Callable[..., ServerProfile]) -> Iterator[Callable[..., Server]]:
    """``make_server("noacct", **profile_changes)``: a Server, closed after the test."""
    servers: list[Server] = []

    def build(cluster_key: str, **changes: object) -> Server:
        server = Server(make_profile(cluster_key, **changes))
        servers.append(server)
        return server

    yield build
    for server in servers:
        server.close()


@pytest.fixture(params=["acct", "noacct"])
def slurm_server(request: pytest.FixtureRequest, make_server: Callable[..., Server]) -> Server:
    """A Server of each cluster in turn: with sacct, and with scontrol only."""
    return make_server(request.param)


@pytest.fixture
def remote_scratch(
    testbed: Testbed, request: pytest.FixtureRequest
) -> Iterator[Callable[[Server], PurePosixPath]]:
    """``remote_scratch(server)``: a fresh folder under the server's working root, removed afterwards."""
    made: list[tuple[Server, PurePosixPath]] = []

    def build(server: Server) -> PurePosixPath:
        name = "".join(ch if ch.isalnum() else "-" for ch in request.node.name)[:60]
        folder = server.working_root / "test-server" / f"{name}-{os.getpid()}-{len(made)}"
        server.remove(folder)
        server.mkdir(folder)
        made.append((server, folder))
        return folder

    yield build
    for server, folder in made:
        with contextlib.suppress(Exception):
            server.remove(folder)


@pytest.fixture
def private_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run journals and local tracker copies go to the test's own user-data folder."""
    folder = tmp_path / "user-data"
    monkeypatch.setenv("SL_PIPELINES_DATA_DIR", str(folder))
    return folder


@pytest.fixture
def project(make_server: Callable[..., Server]) -> Iterator[str]:
    """A fresh project name; its folders on every cluster are removed afterwards."""
    name = f"itest-{uuid.uuid4().hex[:8]}"
    yield name
    for key in ("acct", "noacct"):
        server = make_server(key)
        server.remove(server.storage_root / name)
        server.remove(server.working_root / name)
