"""What ``scripts/bench_scale.py`` does on the testbed besides measuring: sessions, cleanup, the original
way of submitting, other people's jobs, counters and the figures' formatting.

from bench_scale_ops import ...      # scripts/ is on sys.path for scripts run from it
"""

from __future__ import annotations

import shlex
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import paramiko
import yaml
from paramiko.sftp_client import SFTPClient

from sl_pipelines.adapters.server import Server
from sl_pipelines.orchestration.pipeline import ProcessingPipeline, default_configs_dir

ROOT = Path(__file__).resolve().parents[1]
SESSIONS_PER_ANIMAL = 100


class SftpRequests:
    """Counts SFTP requests (each one a round trip to the server) of every SFTP client in this process."""

    count = 0

    @classmethod
    def install(cls) -> None:
        original: Callable[..., Any] = SFTPClient._async_request

        def counted(self: SFTPClient, *args: Any) -> Any:
            cls.count += 1
            return original(self, *args)

        SFTPClient._async_request = counted  # type: ignore[method-assign]


def floor_command(tracker: PurePosixPath | str) -> str:
    """The floor a lone pipeline's polling cycle is measured against: ``squeue --me`` and ``cat`` of its
    tracker, one command over the same connection."""
    return f"squeue --me; cat -- {shlex.quote(str(tracker))}"


def jobs_held(server: Server) -> int:
    """How many jobs slurmctld holds now (array tasks one by one): every user's, finished ones kept for
    MinJobAge included."""
    return len(server.run("squeue -h -a -r -t all -o %i", check=True).stdout.split())


def loadavg() -> float:
    """The one-minute load average (2 CPUs here: above 2, something else competes with the run)."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def spread(values: Sequence[float], digits: int = 0) -> str:
    """``median [min..max]`` of the samples."""
    if not values:
        return "-"
    med, low, high = statistics.median(values), min(values), max(values)
    return f"{med:,.{digits}f} [{low:,.{digits}f}..{high:,.{digits}f}]"


def testbed(*args: str) -> None:
    """Runs ``scripts/testbed.sh ARGS`` (this instance: SL_TESTBED_* from the environment)."""
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "testbed.sh"), *args], check=True, stdout=subprocess.DEVNULL
    )


def long_running_configs(folder: Path) -> Path:
    """The behavior definition with jobs that run for 15 minutes: nothing changes while it measures."""
    data = yaml.safe_load((default_configs_dir() / "behavior.yaml").read_text())
    for job in data["stages"][0]["jobs"]:
        job["command"] += " --seconds 900"
    (folder / "behavior.yaml").write_text(yaml.safe_dump(data))
    return folder


def session_names(count: int) -> dict[str, list[str]]:
    """``count`` session ids, unique across the project (bare ids must be), 100 per animal."""
    animals: dict[str, list[str]] = {}
    for index in range(count):
        animals.setdefault(f"A{index // SESSIONS_PER_ANIMAL:02d}", []).append(f"s{index:04d}")
    return animals


def generate_sessions(server: Server, project: str, animals: dict[str, list[str]]) -> None:
    """Writes the demo sessions with the server environment's ``sl-worker generate``: one command."""
    env = shlex.quote(server.environment.value)
    steps = [f"source {env}/bin/activate"]
    for animal, names in animals.items():
        sessions = " ".join(f"--session {name}" for name in names)
        steps.append(
            f"sl-worker generate -q --storage-root {shlex.quote(str(server.storage_root))} "
            f"--project {project} --animal {animal} --planes 1 --size-kb 1 {sessions}"
        )
    server.run(" && ".join(steps), check=True, timeout=1800)


def job_ids(pipelines: Sequence[ProcessingPipeline]) -> list[str]:
    """Every job id the pipelines journaled."""
    return [job_id for p in pipelines for job_id in p.journal.job_ids.values()]


def cancel_and_wait(server: Server, ids: Sequence[str], tokens: Sequence[str]) -> None:
    """Cancels the jobs (by id, and any job of the user whose name carries a run token), then waits until
    none of them is pending, running or completing, so that no cancelled job touches the next round."""
    for start in range(0, len(ids), 2000):
        server.cancel(list(ids[start : start + 2000]))
    wanted = set(tokens)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        listing = server.run("squeue --me -h -t PD,R,CG,CF,S -o '%i %j'", check=True).stdout.split("\n")
        left = [line.split()[0] for line in listing if line.strip() and _carries(line, wanted)]
        if not left:
            return
        server.cancel(left[:2000])
        time.sleep(2)
    print(f"warning: {len(left)} job(s) still present after cancelling")


def _carries(line: str, tokens: set[str]) -> bool:
    return any(token in line for token in tokens) if tokens else False


def remove_run_files(server: Server, project: str, pipelines: Sequence[ProcessingPipeline]) -> None:
    """Removes the runs' job folders, the sessions' trackers and the working project: ONE command."""
    storage = shlex.quote(str(server.storage_root / project))
    working = shlex.quote(str(server.working_root / project))
    folders = "".join(f"{p.resolved.jobs_folder}\0" for p in pipelines).encode()
    command = f"rm -rf -- {storage}/*/*/tracking_data {working} && xargs -0 -r rm -rf --"
    result = server.transport.run(command, stdin=folders, timeout=900)
    if not result.ok:
        print(f"warning: cleanup said {result.stderr.strip()[:300]}")
    for pipeline in pipelines:
        pipeline.close()


def plain_client(info: dict[str, Any], user: str) -> paramiko.SSHClient:
    """A plain paramiko connection (Nagle on, as the original system's), for the original way."""
    client = paramiko.SSHClient()
    client.load_host_keys(str(info["known_hosts"]))
    client.connect(str(info["host"]), port=int(info["port"]), username=user,
                   key_filename=str(info["key_file"]), allow_agent=False, look_for_keys=False)  # fmt: skip
    return client


def _exec(client: paramiko.SSHClient, command: str) -> str:
    _stdin, stdout, stderr = client.exec_command(command)
    out = stdout.read().decode()
    if stdout.channel.recv_exit_status() != 0:
        raise RuntimeError(f"{command} failed: {stderr.read().decode()}")
    return out


def original_submission(
    client: paramiko.SSHClient, pipelines: Sequence[ProcessingPipeline]
) -> tuple[int, int, float, list[str]]:
    """The original system's submission: per pipeline one ``mkdir``; per job one new SFTP session (folder
    and script upload), one ``chmod`` and one ``sbatch``, one after another. Returns (commands, SFTP
    sessions, seconds, job ids)."""
    commands = sessions = 0
    ids = []
    started = time.perf_counter()
    for pipeline in pipelines:
        _exec(client, f"mkdir -p {shlex.quote(str(pipeline.resolved.jobs_folder))}")
        commands += 1
        for resolved in pipeline.resolved.stages[1]:
            job = resolved.job
            sftp = client.open_sftp()
            sessions += 1
            _sftp_mkdir(sftp, job.working_directory)
            with sftp.open(str(job.script_path), "w") as handle:
                handle.write(job.render())
            sftp.close()
            script = shlex.quote(str(job.script_path))
            _exec(client, f"chmod +x {script}")
            ids.append(_exec(client, f"sbatch --parsable {script}").strip().split(";")[0])
            commands += 2
    return commands, sessions, time.perf_counter() - started, ids


def _sftp_mkdir(sftp: paramiko.SFTPClient, folder: PurePosixPath) -> None:
    try:
        sftp.stat(str(folder))
    except FileNotFoundError:
        _sftp_mkdir(sftp, folder.parent)
        sftp.mkdir(str(folder))
