"""Benchmark of the Server against the testbed: job status round trips and tree transfer throughput.

Run ``bash scripts/testbed.sh start`` first, then ``.venv/bin/python scripts/bench_server.py``. Prints,
side by side in one run:

(a) the states of N jobs (default 50) with ``Server.status`` (one remote command) versus one
    ``squeue -j ID`` per job over the same connection (how the original system polls);
(b) push and pull of a ~1 GB tree (one 512 MiB file, 60 x 8 MiB, 2,000 x 4 KiB) with ``Server`` versus
    OpenSSH ``scp -r`` and ``sftp -b`` over the same loopback;
(c) ``sl-server push``'s upload of the same tree as a session (``Server.push_session``: local hashing,
    server-side xxHash verification with fsync, checksum file, move into place) versus ``scp -r`` and
    ``sftp -b``, the three taking turns in each round; then an upload interrupted half-way and resumed,
    with the file bytes and the socket's bytes the resume sent.

Everything it creates (local and remote) is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from testbed_profile import testbed_info, testbed_profile

from sl_pipelines.adapters.server import Server
from sl_pipelines.adapters.transfer import Verify
from sl_pipelines.adapters.upload_remote import UploadPaths
from sl_pipelines.core.job import Job, Resources
from sl_pipelines.core.layout import SessionPaths

MIB = 1 << 20


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


# ------------------------------------------------------------------------------------------- (a)


def bench_status(server: Server, folder: PurePosixPath, count: int, repeats: int) -> None:
    jobs = [
        Job(f"bench-{i:03d}", folder / f"job-{i:03d}", (("sleep", "1"),), Resources(memory_mb=64))
        for i in range(count)
    ]
    ids = list(server.submit_jobs(jobs).submitted.values())
    server.connect()
    time.sleep(3)
    batched, per_job = [], []
    for _ in range(repeats):
        before = server.round_trips
        batched.append(timed(lambda: server.status(ids)))
        batched_trips = server.round_trips - before
        before = server.round_trips
        per_job.append(timed(lambda: [server.run(f"squeue -h -j {job_id}") for job_id in ids]))
        per_job_trips = server.round_trips - before
    states = server.status(ids)
    b, p = statistics.median(batched), statistics.median(per_job)
    print(f"\n(a) states of {count} jobs ({server.accounting_mode.value} cluster), median of {repeats} runs")
    print(f"    {'method':<34}{'round trips':>12}{'wall time':>12}")
    print(f"    {'Server.status (one command)':<34}{batched_trips:>12}{b * 1000:>10.1f} ms")
    print(f"    {'one squeue -j per job':<34}{per_job_trips:>12}{p * 1000:>10.1f} ms")
    print(f"    ratio: {per_job_trips / batched_trips:.0f}x fewer round trips, {p / b:.1f}x faster")
    print(f"    states seen: {sorted({s.state.value for s in states.values()})}")


# ------------------------------------------------------------------------------------------- (b)


def make_tree(root: Path, big_mib: int, mids: int, smalls: int) -> int:
    (root / "small").mkdir(parents=True)
    (root / "mid").mkdir()
    block = os.urandom(MIB)
    with (root / "big.bin").open("wb") as handle:
        for index in range(big_mib):
            handle.write(block[index % 7 :] + block[: index % 7])
    for index in range(mids):
        (root / "mid" / f"m{index:03d}.bin").write_bytes(os.urandom(8 * MIB))
    for index in range(smalls):
        (root / "small" / f"s{index:05d}.dat").write_bytes(os.urandom(4096))
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def openssh(info: dict[str, object], cluster: dict[str, str]) -> tuple[list[str], str]:
    options = [
        "-i", str(info["key_file"]), "-o", f"UserKnownHostsFile={info['known_hosts']}", "-o", "BatchMode=yes",
        "-o", "IdentitiesOnly=yes", "-P", str(info["port"]),
    ]  # fmt: skip
    return options, f"{cluster['user']}@{info['host']}"


def bench_transfers(server: Server, info: dict[str, object], cluster: dict[str, str], folder: PurePosixPath,
                    local: Path, repeats: int) -> None:  # fmt: skip
    source = local / "tree"
    total = make_tree(source, big_mib=512, mids=60, smalls=2000)
    options, target = openssh(info, cluster)
    results: dict[str, list[float]] = {}

    def run(label: str, action: Callable[[], object], cleanup: Callable[[], object]) -> None:
        for _ in range(repeats):
            cleanup()
            results.setdefault(label, []).append(timed(action))
        cleanup()

    def clean_remote() -> None:
        server.remove(folder / "up")

    def clean_local() -> None:
        shutil.rmtree(local / "down", ignore_errors=True)

    def push_server() -> None:
        server.push_tree(source, folder / "up", verify=Verify.SIZE)

    def push_scp() -> None:
        subprocess.run(["scp", "-q", "-r", *options, str(source), f"{target}:{folder / 'up'}"], check=True)

    def push_sftp() -> None:
        batch = f"mkdir {folder / 'up'}\nput -r {source} {folder / 'up'}\n"
        subprocess.run(["sftp", "-q", "-b", "-", *options, target], input=batch, text=True, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip

    run("push Server.push_tree", push_server, clean_remote)
    run("push scp -r", push_scp, clean_remote)
    run("push sftp -b", push_sftp, clean_remote)
    server.push_tree(source, folder / "pull-source", verify=Verify.NONE)

    def pull_server() -> None:
        server.pull_tree(folder / "pull-source", local / "down", verify=Verify.SIZE)

    def pull_scp() -> None:
        subprocess.run(
            ["scp", "-q", "-r", *options, f"{target}:{folder / 'pull-source'}", str(local / "down")],
            check=True,
        )

    def pull_sftp() -> None:
        (local / "down").mkdir()
        batch = f"get -r {folder / 'pull-source'} {local / 'down'}\n"
        subprocess.run(["sftp", "-q", "-b", "-", *options, target], input=batch, text=True, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip

    run("pull Server.pull_tree", pull_server, clean_local)
    run("pull scp -r", pull_scp, clean_local)
    run("pull sftp -b", pull_sftp, clean_local)
    print(
        f"\n(b) tree of {total / MIB:.0f} MiB (1 x 512 MiB, 60 x 8 MiB, 2000 x 4 KiB), best of {repeats} runs"
    )
    print(f"    {'method':<26}{'best':>10}{'median':>10}{'MB/s':>10}")
    rates = {}
    for label, times in results.items():
        rates[label] = total / 1e6 / min(times)
        print(f"    {label:<26}{min(times):>9.2f}s{statistics.median(times):>9.2f}s{rates[label]:>10.0f}")
    for direction in ("push", "pull"):
        ours = rates[f"{direction} Server.{direction}_tree"]
        best = max(rates[f"{direction} scp -r"], rates[f"{direction} sftp -b"])
        print(f"    {direction}: Server reaches {100 * ours / best:.0f}% of the faster OpenSSH client")


# ------------------------------------------------------------------------------------------- (c)


class _StopHalfway:
    """Upload progress that interrupts the upload (as Ctrl-C would) once half of it was sent."""

    def __init__(self) -> None:
        self.uploading, self.sent, self.total = False, 0, 0

    def stage(self, description: str, total: int, completed: int = 0) -> None:
        self.uploading, self.sent, self.total = description == "uploading", completed, total

    def advance(self, amount: int) -> None:
        self.sent += amount
        if self.uploading and self.sent >= self.total // 2:
            raise KeyboardInterrupt


def bench_upload(server: Server, info: dict[str, object], cluster: dict[str, str], folder: PurePosixPath,
                 local: Path, repeats: int) -> None:  # fmt: skip
    session = local / "session"
    total = make_tree(session / "raw_data", big_mib=512, mids=60, smalls=2000)
    options, target = openssh(info, cluster)
    project = f"bench-upload-{os.getpid()}"
    times: dict[str, list[float]] = {}
    raw = session / "raw_data"
    methods: dict[str, Callable[[int], object]] = {
        "sl-server push": lambda r: server.push_session(raw, project, "A1", f"s{r}"),
        "scp -r": lambda r: subprocess.run(
            ["scp", "-q", "-r", *options, str(raw), f"{target}:{folder / f'scp{r}'}"], check=True
        ),
        "sftp -b": lambda r: subprocess.run(
            ["sftp", "-q", "-b", "-", *options, target], check=True, stdout=subprocess.DEVNULL, text=True,
            input=f"mkdir {folder / f'sftp{r}'}\nput -r {session / 'raw_data'} {folder / f'sftp{r}'}\n",
        ),
    }  # fmt: skip
    try:
        for round_ in range(repeats):
            for label, action in methods.items():
                times.setdefault(label, []).append(timed(lambda a=action, r=round_: a(r)))
                server.remove(folder / f"scp{round_}")
                server.remove(folder / f"sftp{round_}")
                server.remove(server.storage_root / project)
        resumed = _interrupted_and_resumed(server, session / "raw_data", project)
    finally:
        server.remove(server.storage_root / project)
    print(f"\n(c) session upload of {total / MIB:.0f} MiB (same tree), {repeats} rounds taking turns")
    print(f"    {'method':<20}{'best':>9}{'median':>9}{'MB/s (median)':>15}")
    rates = {}
    for label, spent in times.items():
        rates[label] = total / 1e6 / statistics.median(spent)
        print(f"    {label:<20}{min(spent):>8.2f}s{statistics.median(spent):>8.2f}s{rates[label]:>15.0f}")
    best = max(rates["scp -r"], rates["sftp -b"])
    share = 100 * rates["sl-server push"] / best
    print(f"    sl-server push reaches {share:.0f}% of the faster OpenSSH client (medians, verified)")
    print(resumed)


def _interrupted_and_resumed(server: Server, raw: Path, project: str) -> str:
    with contextlib.suppress(KeyboardInterrupt):  # the interruption, half-way
        server.push_session(raw, project, "A1", "resumed", progress=_StopHalfway())
    server.close()  # the interrupted client is gone; the resume comes on a new connection
    target = SessionPaths(server.storage_root, server.working_root, project, "A1", "resumed")
    server.connect()
    before = server.transport.wire_bytes_sent or 0
    report = server.push_session(raw, project, "A1", "resumed")
    wire = (server.transport.wire_bytes_sent or 0) - before
    assert not server.exists(UploadPaths.beside(target.raw_data).partial)
    return (
        f"    interrupted at half, then resumed: {report.sent_bytes / MIB:.1f} MiB of file content sent "
        f"({100 * report.sent_bytes / report.size_bytes:.1f}% of {report.size_bytes / MIB:.0f} MiB), "
        f"{wire / MIB:.1f} MiB on the wire, in {report.seconds:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--state", type=Path, default=Path(os.environ.get("SL_TESTBED_DIR", "/var/tmp/sl-testbed"))
    )
    parser.add_argument("--cluster", default="acct")
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-transfers", action="store_true")
    parser.add_argument("--skip-upload", action="store_true")
    parser.add_argument("--upload-only", action="store_true", help="only (c): the session upload")
    arguments = parser.parse_args()
    profile, info = testbed_profile(
        arguments.cluster, name="bench", info=testbed_info(arguments.state), command_timeout=600
    )
    cluster = info["clusters"][arguments.cluster]
    folder = profile.working_root / f"bench-server-{os.getpid()}"
    with Server(profile) as server, tempfile.TemporaryDirectory(prefix="bench-server-") as local:
        server.mkdir(folder)
        try:
            if not arguments.upload_only:
                bench_status(server, folder / "jobs", arguments.jobs, arguments.repeats)
            if not (arguments.skip_transfers or arguments.upload_only):
                bench_transfers(server, info, cluster, folder, Path(local), arguments.repeats)
            if not arguments.skip_upload:
                bench_upload(server, info, cluster, folder, Path(local), arguments.repeats)
        finally:
            server.remove(folder)


if __name__ == "__main__":
    main()
