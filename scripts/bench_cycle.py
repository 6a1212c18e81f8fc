"""What one polling cycle costs with 1, 10 and 50 pipelines in flight, against the original system's way.

Runs on the real testbed (``bash scripts/testbed.sh start`` first; this script starts it if needed).
It generates 50 sessions on the server, builds 50 behavior pipelines (7 parallel jobs each, made to
run for minutes so that nothing changes while it measures), submits them, and then measures side by
side, in one run, for 1, 10 and 50 pipelines:

* sl_pipelines: ``PipelineManager.cycle()`` — one probe for all pipelines (remote commands per cycle
  counted by the Server, wall time per cycle);
* the original system's polling: one ``squeue -j ID`` exec per job and one new SFTP session per
  tracker pull, over one plain paramiko connection (as sl-shared-assets 5.x does).

Goal (issue 4): one remote command per cycle whatever the number of pipelines, and a 50-pipeline cycle
under three times a 1-pipeline cycle. Everything it submitted is cancelled and removed at the end.

    .venv/bin/python scripts/bench_cycle.py [--repeat 5] [--cluster acct|noacct]
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import paramiko
from bench_scale_ops import long_running_configs
from testbed_profile import testbed_profile

from sl_pipelines.adapters.server import Server
from sl_pipelines.orchestration.cycle import run_cycle
from sl_pipelines.orchestration.pipeline import ProcessingPipeline

ROOT = Path(__file__).resolve().parents[1]
SIZES = (1, 10, 50)


def start_testbed() -> None:
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "testbed.sh"), "start"], check=True, stdout=subprocess.DEVNULL
    )


def baseline_cycle(client: paramiko.SSHClient, pipelines: list[ProcessingPipeline]) -> tuple[int, int, float]:
    """The original polling: squeue per job, a fresh SFTP session per tracker pull."""
    commands = sessions = 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        for pipeline in pipelines:
            for job_id in pipeline.journal.job_ids.values():
                _stdin, stdout, _stderr = client.exec_command(f"squeue -j {shlex.quote(job_id)}")
                stdout.read()
                stdout.channel.recv_exit_status()
                commands += 1
            sftp = client.open_sftp()
            sftp.get(str(pipeline.remote_tracker_path), str(Path(scratch) / "tracker.yaml"))
            sftp.close()
            sessions += 1
    return commands, sessions, time.perf_counter() - started


def ours_cycle(server: Server, pipelines: list[ProcessingPipeline]) -> tuple[int, float]:
    before = server.round_trips
    started = time.perf_counter()
    run_cycle(server, pipelines)
    return server.round_trips - before, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5, help="cycles measured per size")
    parser.add_argument("--cluster", choices=("acct", "noacct"), default="acct")
    args = parser.parse_args()
    start_testbed()
    profile, info = testbed_profile(args.cluster, name=f"bench-{args.cluster}")
    server, cluster = Server(profile), info["clusters"][args.cluster]
    project = f"bench-{uuid.uuid4().hex[:6]}"
    os.environ.setdefault("SL_PIPELINES_DATA_DIR", tempfile.mkdtemp(prefix="sl-bench-data-"))
    sessions = [f"s{i:02d}" for i in range(max(SIZES))]
    env = server.environment.value
    generate = f"source {shlex.quote(env)}/bin/activate && sl-worker generate -q --storage-root "
    generate += (
        f"{shlex.quote(str(server.storage_root))} --project {project} --animal A1 --planes 1 --size-kb 1 "
    )
    generate += " ".join(f"--session {s}" for s in sessions)
    server.run(generate, check=True)
    client = paramiko.SSHClient()
    client.load_host_keys(str(info["known_hosts"]))
    client.connect(str(info["host"]), port=int(str(info["port"])), username=cluster["user"],
                   key_filename=str(info["key_file"]), allow_agent=False, look_for_keys=False)  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        configs = long_running_configs(Path(scratch))
        pipelines = [
            ProcessingPipeline.create("behavior", [f"{project}/A1/{s}"], server, configs_dir=configs)
            for s in sessions
        ]
        try:
            _measure(server, client, pipelines, args.repeat)
        finally:
            ids = [i for p in pipelines for i in p.journal.job_ids.values()]
            server.cancel(ids)
            server.remove(server.storage_root / project)
            for pipeline in pipelines:
                server.remove(pipeline.resolved.jobs_folder)
            client.close()
            server.close()


def _measure(
    server: Server, client: paramiko.SSHClient, pipelines: list[ProcessingPipeline], repeat: int
) -> None:
    before, started = server.round_trips, time.perf_counter()
    run_cycle(server, pipelines)
    submit_seconds = time.perf_counter() - started
    jobs = sum(len(p.journal.job_ids) for p in pipelines)
    commands = server.round_trips - before
    print(
        f"Submitted {len(pipelines)} pipelines ({jobs} jobs) in {submit_seconds:.2f} s with {commands} remote"
    )
    print("commands (accounting detection, one probe, one batched tracker claim, one submission command).")
    rows = []
    for size in SIZES:
        subset = pipelines[:size]
        ours = [ours_cycle(server, subset) for _ in range(repeat)]
        base = [baseline_cycle(client, subset) for _ in range(repeat)]
        rows.append(
            (
                size,
                statistics.median(c for c, _ in ours),
                statistics.median(t for _, t in ours) * 1000,
                statistics.median(c + s for c, s, _ in base),
                statistics.median(t for *_, t in base) * 1000,
            )
        )
    print()
    print(f"{'pipelines':>9} | {'ours: cmds/cycle':>16} {'ms/cycle':>9} | "
          f"{'original: cmds+sftp/cycle':>25} {'ms/cycle':>9} | {'speed-up':>8}")  # fmt: skip
    for size, cmds, ms, base_cmds, base_ms in rows:
        ratio = base_ms / ms
        print(f"{size:>9} | {cmds:>16.0f} {ms:>9.1f} | {base_cmds:>25.0f} {base_ms:>9.1f} | {ratio:>7.1f}x")
    one, fifty = rows[0][2], rows[-1][2]
    print()
    print(f"ours, 50 pipelines vs 1: {fifty / one:.2f}x the cycle time (goal: under 3x); "
          f"remote commands per cycle: {sorted({int(r[1]) for r in rows})} (goal: [1])")  # fmt: skip


if __name__ == "__main__":
    main()
