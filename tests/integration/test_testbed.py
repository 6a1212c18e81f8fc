"""Smoke tests of the testbed: real sshd with a pinned host key, real Slurm with and without accounting."""

from __future__ import annotations

import stat
import subprocess
import time
import uuid
from pathlib import Path

import paramiko
import pytest
from conftest import Testbed, ssh_run


def _wait_for_job(testbed: Testbed, cluster: str, job_id: str, timeout: float = 60) -> str:
    """Polls `scontrol show job` until the job has left the queue; returns its final JobState."""
    deadline = time.monotonic() + timeout
    while True:
        out = ssh_run(testbed, cluster, f"scontrol -o show job {job_id}", check=True).stdout
        state = next(field.split("=", 1)[1] for field in out.split() if field.startswith("JobState="))
        if state not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING"):
            return state
        assert time.monotonic() < deadline, f"job {job_id} still {state} after {timeout}s"
        time.sleep(0.3)


def test_info_file_and_files(testbed: Testbed) -> None:
    assert testbed.host == "127.0.0.1"
    assert stat.S_IMODE(testbed.key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((testbed.state_dir / "testbed.json").stat().st_mode) == 0o600
    assert (testbed.server_env / "bin" / "sl-worker").exists()
    assert (testbed.server_env / "bin" / "sl-tracker").exists()
    assert set(testbed.clusters) <= {"acct", "noacct"}
    assert testbed.cluster("noacct").user == "sltest2"


def test_sshd_presents_the_pinned_host_key(testbed: Testbed) -> None:
    line = testbed.known_hosts.read_text().split()
    assert line[0] == f"[{testbed.host}]:{testbed.port}"
    assert line[1] == "ssh-ed25519"
    scan = subprocess.run(
        ["ssh-keyscan", "-t", "ed25519", "-p", str(testbed.port), testbed.host],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert scan.stdout.split()[1:3] == line[1:3]
    # A client that knows another key for this host must refuse to connect.
    other = testbed.state_dir / f"wrong_known_hosts-{uuid.uuid4().hex}"
    try:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
        fake = f"[{testbed.host}]:{testbed.port} {other.with_suffix('.pub').read_text()}"
        other.with_suffix(".pub").unlink()
        other.write_text(fake)
        result = subprocess.run(
            ["ssh", "-i", str(testbed.key_file), "-o", f"UserKnownHostsFile={other}", "-o",
             "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-p", str(testbed.port),
             f"sltest@{testbed.host}", "true"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert result.returncode == 255
        assert "HOST IDENTIFICATION HAS CHANGED" in result.stderr
    finally:
        other.unlink(missing_ok=True)


@pytest.mark.parametrize("cluster", ["acct", "noacct"])
def test_key_login_sees_its_cluster(testbed: Testbed, cluster: str) -> None:
    c = testbed.cluster(cluster)
    result = ssh_run(
        testbed, c, 'id -un; echo "$SLURM_CONF"; scontrol show config | grep ^ClusterName', check=True
    )
    user, conf, cluster_line = result.stdout.splitlines()
    assert user == c.user
    assert conf == str(c.slurm_conf)
    assert cluster_line.split("=")[1].strip() == c.name


def test_password_login_over_paramiko(testbed: Testbed) -> None:
    client = paramiko.SSHClient()
    client.load_host_keys(str(testbed.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            testbed.host, port=testbed.port, username="sltest2", password=testbed.password,
            look_for_keys=False, allow_agent=False, timeout=10,
        )  # fmt: skip
        _, stdout, _ = client.exec_command("id -un")
        assert stdout.read().decode().strip() == "sltest2"
        sftp = client.open_sftp()
        assert sftp.stat(str(testbed.cluster("noacct").storage_root)) is not None
        sftp.close()
    finally:
        client.close()


@pytest.mark.parametrize("cluster", ["acct", "noacct"])
def test_sbatch_runs_job_as_test_user(testbed: Testbed, cluster: str) -> None:
    c = testbed.cluster(cluster)
    marker = c.storage_root / f"smoke-{uuid.uuid4().hex}.txt"
    job_id = ssh_run(
        testbed, c,
        f'sbatch --parsable -J smoke -o /dev/null --wrap "id -un > {marker}; echo \\$SLURM_CONF >> {marker}"',
        check=True,
    ).stdout.strip()  # fmt: skip
    assert job_id.isdigit()
    assert _wait_for_job(testbed, cluster, job_id) == "COMPLETED"
    try:
        assert marker.read_text().split() == [c.user, str(c.slurm_conf)]
        assert marker.stat().st_uid != 0
    finally:
        marker.unlink(missing_ok=True)


def test_jobs_run_in_parallel(testbed: Testbed) -> None:
    c = testbed.cluster("noacct")
    ids = ssh_run(
        testbed, c,
        "for i in 1 2 3 4; do sbatch --parsable -J par -c 1 --output=/dev/null --wrap 'sleep 4'; done",
        check=True,
    ).stdout.split()  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        running = 0
        while time.monotonic() < deadline and running < 4:
            out = ssh_run(testbed, c, f"squeue -h -j {','.join(ids)} -t RUNNING -o %i", check=True).stdout
            running = len(out.split())
            time.sleep(0.3)
        assert running == 4
    finally:
        ssh_run(testbed, c, f"scancel {' '.join(ids)}")


def test_sacct_works_with_accounting(testbed: Testbed) -> None:
    c = testbed.cluster("acct")
    job_id = ssh_run(testbed, c, "sbatch --parsable -J acct --output=/dev/null --wrap 'exit 3'", check=True)
    job_id_s = job_id.stdout.strip()
    assert _wait_for_job(testbed, "acct", job_id_s) == "FAILED"
    deadline = time.monotonic() + 20
    while True:
        out = ssh_run(testbed, c, f"sacct -n -X -P -j {job_id_s} -o JobID,State,ExitCode", check=True).stdout
        if out.strip():
            break
        assert time.monotonic() < deadline, "sacct never reported the job"
        time.sleep(0.3)
    assert out.split() == [f"{job_id_s}|FAILED|3:0"]


def test_sacct_fails_without_accounting(testbed: Testbed) -> None:
    c = testbed.cluster("noacct")
    result = ssh_run(testbed, c, "sacct -n -X")
    assert result.returncode != 0
    assert "accounting storage is disabled" in result.stderr.lower()


def _listening_addresses() -> dict[int, set[str]]:
    """Port -> local IPv4/IPv6 addresses (hex, as in /proc/net/tcp*) of listening TCP sockets."""
    result: dict[int, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port = fields[1].split(":")
            if fields[3] == "0A":  # LISTEN
                result.setdefault(int(port, 16), set()).add(address)
    return result


def test_sshd_and_slurm_listen_on_loopback_only(testbed: Testbed) -> None:
    # slurmdbd is the exception: Slurm 22.05's slurmdbd has no option to bind one address.
    ports = {testbed.port}
    for cluster in testbed.clusters.values():
        for line in cluster.slurm_conf.read_text().splitlines():
            if line.startswith(("SlurmctldPort=", "SlurmdPort=")):
                ports.add(int(line.split("=")[1]))
    listening = _listening_addresses()
    loopback = "0100007F"  # 127.0.0.1
    for port in ports:
        assert listening.get(port) == {loopback}, f"port {port}: {listening.get(port)}"


@pytest.mark.slow
def test_a_stopped_controller_comes_back_while_its_job_runs(testbed: Testbed) -> None:
    c = testbed.cluster("noacct")
    job_id = ssh_run(
        testbed, c, "sbatch --parsable -J outage -o /dev/null --wrap 'sleep 12'", check=True
    ).stdout.strip()
    deadline = time.monotonic() + 30
    while "RUNNING" not in ssh_run(testbed, c, f"squeue -h -j {job_id} -o %T", check=True).stdout:
        assert time.monotonic() < deadline, "the job did not start"
        time.sleep(0.3)
    with testbed.outage("slurmctld-slnoacct"):
        down = ssh_run(testbed, c, "scontrol ping")
        assert "DOWN" in down.stdout, down.stdout + down.stderr
        started = time.monotonic()
    assert time.monotonic() - started < 30, "start waited for the node to be idle"
    assert "UP" in ssh_run(testbed, c, "scontrol ping", check=True).stdout
    assert _wait_for_job(testbed, "noacct", job_id) == "COMPLETED"


def test_stop_refuses_an_unknown_daemon(testbed: Testbed) -> None:
    script = Path(__file__).resolve().parents[2] / "scripts" / "testbed.sh"
    result = subprocess.run(
        ["bash", str(script), "stop", "slurmctld-nosuch"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "no daemon named slurmctld-nosuch" in result.stderr
