"""A year of a lab's data at once: 1, 10, 100 and 1,000 behavior pipelines (7 jobs each) on both clusters.

Runs on the real testbed (``bash scripts/testbed.sh start`` first; this script starts it if needed; it
needs root, for ``testbed.sh load-others``). Per cluster (``acct``: slacct with sacct, user sltest;
``noacct``: slnoacct without accounting, user sltest2) it generates N+1 sessions on the server with the
server environment's ``sl-worker generate`` (N = the largest size), then repeats ``--rounds`` times:

1. builds one pipeline from a bare session id, submits it alone, and measures its polling cycle against
   the floor: ``squeue --me`` + ``cat`` of its tracker, one command over the same connection;
2. builds N pipelines from bare session ids as ``sl-process`` does (``find_sessions`` for all, then
   ``ProcessingPipeline.create`` each: SSH commands, SFTP requests, wall time; the lone pipeline of step 1
   is built by ``create`` from its bare id) and submits them through ``PipelineManager`` cycles;
3. measures polling cycles over the first 1, 10, 100, ... of them (``PipelineManager.cycle``: remote
   commands, SFTP requests, wall time, the probe's share, the manager's CPU) and counts the journal files
   written meanwhile (goal: none, nothing changed);
4. with ``--others`` and at least 2 rounds, the second round runs with another user's 1,000 held jobs in
   slurmctld (``testbed.sh load-others``, loaded before the round starts and cancelled after it): its
   probes, against those of the other rounds, give the "other people's jobs" ratio. Each round starts
   the same way (after the previous round's cleanup, the load settled), so the rounds differ by the
   other jobs; measuring before and after loading them within one round compared a probe during
   slurmctld's scheduling of 7,000 fresh jobs with one after it;
5. cancels every job and removes the runs' folders and trackers.

Then the original way of submitting (one SFTP session + ``chmod`` + ``sbatch`` per job, Nagle on, as
sl-shared-assets 5.x does) on ``--original`` pipelines. Jobs run ``sl-worker demo --seconds 900`` so that
nothing changes while it measures. Everything it created is cancelled and removed at the end.

    .venv/bin/python scripts/bench_scale.py [--sizes 1,10,100,1000] [--clusters acct,noacct]
        [--rounds 3] [--repeat 3] [--original 100] [--others 1000] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import resource
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_scale_ops import (
    SftpRequests,
    cancel_and_wait,
    floor_command,
    generate_sessions,
    job_ids,
    jobs_held,
    loadavg,
    long_running_configs,
    original_submission,
    plain_client,
    remove_run_files,
    session_names,
    testbed,
)
from bench_scale_report import ALONE, print_report
from testbed_profile import testbed_profile

from sl_pipelines.adapters.server import Server
from sl_pipelines.orchestration.journal import runs_dir
from sl_pipelines.orchestration.manager import PipelineManager
from sl_pipelines.orchestration.pipeline import ProcessingPipeline
from sl_pipelines.orchestration.sessions import find_sessions


@dataclass
class Bench:
    """One cluster's connection, what it created, and the samples measured on it."""

    key: str
    server: Server
    info: dict[str, Any]
    project: str
    configs: Path
    args: argparse.Namespace
    samples: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    loads: list[tuple[str, float, float, float]] = field(default_factory=list)
    created: list[ProcessingPipeline] = field(default_factory=list)
    probe_seconds: float = 0.0

    def add(self, key: str, value: float) -> None:
        self.samples[key].append(value)

    def forget(self, pipelines: Sequence[ProcessingPipeline]) -> None:
        """Drops cleaned-up pipelines, so that a round's memory figures do not carry the previous round."""
        gone = {id(p) for p in pipelines}
        self.created = [p for p in self.created if id(p) not in gone]
        gc.collect()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Notes the load average before and after a phase (2 CPUs: above ~2, the machine was busy)."""
        before, started = loadavg(), time.monotonic()
        yield
        self.loads.append((name, time.monotonic() - started, before, loadavg()))

    def time_probes(self) -> None:
        """Times every ``Server.probe`` (the probe's share of a cycle), without changing what it does."""
        probe: Callable[..., Any] = self.server.probe

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return probe(*args, **kwargs)
            finally:
                self.probe_seconds += time.perf_counter() - started

        self.server.probe = timed  # type: ignore[method-assign]


def build(bench: Bench, session_ids: Sequence[str]) -> list[ProcessingPipeline]:
    """Builds one behavior pipeline per bare session id through the public API, as ``sl-process`` does:
    every session found at once (``find_sessions``), then one ``ProcessingPipeline.create`` each."""
    found = find_sessions(bench.server, list(session_ids))
    pipelines = []
    for session in found:
        pipelines.append(
            ProcessingPipeline.create("behavior", [session], bench.server, configs_dir=bench.configs)
        )
        bench.created.append(pipelines[-1])
    return pipelines


def measure_build(bench: Bench, session_ids: Sequence[str], label: str) -> list[ProcessingPipeline]:
    exec_before, sftp_before, started = bench.server.round_trips, SftpRequests.count, time.perf_counter()
    if len(session_ids) == 1:  # one pipeline, as a script calling create() with a bare id does
        configs = bench.configs
        pipelines = [
            ProcessingPipeline.create("behavior", list(session_ids), bench.server, configs_dir=configs)
        ]
        bench.created.extend(pipelines)
    else:
        pipelines = build(bench, session_ids)
    bench.add(f"build_s/{label}", time.perf_counter() - started)
    bench.add(f"build_exec/{label}", bench.server.round_trips - exec_before)
    bench.add(f"build_sftp/{label}", SftpRequests.count - sftp_before)
    return pipelines


def submit(bench: Bench, pipelines: list[ProcessingPipeline], label: str) -> None:
    """Cycles a manager over the pipelines until every job of their first stage has an id."""
    manager = PipelineManager(bench.server, pipelines, max_parallel=len(pipelines))
    exec_before, sftp_before, started = bench.server.round_trips, SftpRequests.count, time.perf_counter()
    cycles = 0
    while not all(p.stage >= 1 and len(p.journal.job_ids) >= len(p.resolved.stages[1]) for p in pipelines):
        ended = [p for p in pipelines if not p.is_running]
        if ended or cycles >= 50 or time.perf_counter() - started > 1800:
            problem = ended[0].describe() if ended else f"not all submitted after {cycles} cycles"
            raise RuntimeError(f"submission of {len(pipelines)} pipelines failed: {problem}")
        manager.cycle()
        cycles += 1
    bench.add(f"submit_s/{label}", time.perf_counter() - started)
    bench.add(f"submit_exec/{label}", bench.server.round_trips - exec_before)
    bench.add(f"submit_sftp/{label}", SftpRequests.count - sftp_before)
    bench.add(f"submit_cycles/{label}", cycles)


collecting: dict[str, list[float]] = {}
"""Time the garbage collector spent in the cycle being measured (``gc.callbacks``)."""


def _gc_timer(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        collecting["start"] = [time.perf_counter()]
    elif "start" in collecting:
        collecting.setdefault("spent", []).append(time.perf_counter() - collecting.pop("start")[0])


gc.callbacks.append(_gc_timer)


def measure_cycles(
    bench: Bench,
    pipelines: list[ProcessingPipeline],
    label: str,
    profile: bool = False,
    repeat: int = 0,
    also: str = "",
) -> None:
    """Polling cycles over the pipelines: commands, SFTP requests, wall, probe share, manager CPU."""
    manager = PipelineManager(bench.server, pipelines, max_parallel=len(pipelines))
    manager.cycle()  # the first cycle of a new manager: not measured
    if profile:
        profiled = cProfile.Profile()
        profiled.runcall(manager.cycle)
        print(f"[{bench.key}] cProfile of one polling cycle over {label} pipelines (this thread's CPU):")
        pstats.Stats(profiled).sort_stats("tottime").print_stats(20)
        pstats.Stats(profiled).sort_stats("cumulative").print_stats(40)
    for _ in range(repeat or bench.args.repeat):
        exec_before, sftp_before = bench.server.round_trips, SftpRequests.count
        bench.probe_seconds = 0.0
        collecting.clear()
        started, cpu = time.perf_counter(), time.process_time()
        changed = manager.cycle()
        bench.add(f"cycle_ms/{label}", (time.perf_counter() - started) * 1000)
        bench.add(f"cpu_ms/{label}", (time.process_time() - cpu) * 1000)
        bench.add(f"gc_ms/{label}", sum(collecting.get("spent", [0.0])) * 1000)
        bench.add(f"probe_ms/{label}", bench.probe_seconds * 1000)
        if also:  # the same probe, counted under another label too
            bench.add(f"probe_ms/{also}", bench.probe_seconds * 1000)
        bench.add(f"cmds/{label}", bench.server.round_trips - exec_before)
        bench.add(f"sftp/{label}", SftpRequests.count - sftp_before)
        bench.add(f"changed/{label}", int(changed))


def measure_alone(bench: Bench, pipeline: ProcessingPipeline) -> None:
    """The pipeline alone in the queue: its polling cycle, interleaved with the floor's command."""
    floor = floor_command(pipeline.remote_tracker_path)
    manager = PipelineManager(bench.server, [pipeline], max_parallel=1)
    manager.cycle()
    for _ in range(bench.args.repeat):
        started = time.perf_counter()
        bench.server.run(floor, check=True)
        bench.add("floor_ms", (time.perf_counter() - started) * 1000)
        exec_before, started = bench.server.round_trips, time.perf_counter()
        manager.cycle()
        bench.add(f"cycle_ms/{ALONE}", (time.perf_counter() - started) * 1000)
        bench.add(f"cmds/{ALONE}", bench.server.round_trips - exec_before)


def current_rss_mb() -> float:
    """This process's resident memory now (VmRSS), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def journals_written(since: float) -> int:
    return sum(1 for path in runs_dir().glob("*.json") if path.stat().st_mtime > since)


OTHERS_REPEAT = 10
"""Cycles per size with and without the other user's jobs (at least): their ratio is a goal."""


def measure_round(bench: Bench, solo_id: str, set_ids: Sequence[str], number: int) -> None:
    sizes, repeat = bench.args.sizes, max(bench.args.repeat, OTHERS_REPEAT)
    others = bench.args.others if number == 1 and bench.args.rounds >= 2 else 0
    tag = "others" if others else "no-others"
    if others:
        with bench.phase(f"load {others} others"):
            quiet = loadavg()
            testbed("load-others", str(others), "--cluster", bench.key)
            settle(quiet_load=max(quiet, 0.5) + 0.25, longest=90.0)
    print(f"[{bench.key}] jobs in slurmctld (every user, every state): {jobs_held(bench.server)}", flush=True)
    try:
        with bench.phase("alone"):
            alone = measure_build(bench, [solo_id], ALONE)
            submit(bench, alone, ALONE)
            if not others:
                measure_alone(bench, alone[0])
            measure_cycles(bench, alone, f"{tag}/{ALONE}", repeat=repeat)
            floor = floor_command(alone[0].remote_tracker_path)
            for _ in range(repeat):  # the controller's own answer time, for the same comparison
                started = time.perf_counter()
                bench.server.run(floor, check=True)
                bench.add(f"floor_ms/{tag}", (time.perf_counter() - started) * 1000)
        with bench.phase(f"build {len(set_ids)}"):
            pipelines = measure_build(bench, set_ids, "all")
        with bench.phase(f"submit {len(set_ids)}"):
            submit(bench, pipelines, "all")
        with bench.phase("polling cycles" + (f" with {others} others" if others else "")):
            since = time.time()
            for size in sizes:
                if others:  # the other user's jobs: only the probe's cost, against the other rounds'
                    measure_cycles(bench, pipelines[:size], f"others/{size}", repeat=repeat)
                    continue
                seen = bench.samples.get(f"cycle_ms/{size}")
                profile = bench.args.profile and size == max(sizes) and not seen
                measure_cycles(bench, pipelines[:size], str(size), profile, also=f"no-others/{size}")
            bench.add("journals_written", journals_written(since))
            bench.add("peak_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
            bench.add("rss_mb", current_rss_mb())
        with bench.phase("cleanup"):
            live = [*alone, *pipelines]
            cancel_and_wait(bench.server, job_ids(live), [p.resolved.token for p in live])
            remove_run_files(bench.server, bench.project, live)
            bench.forget(live)
    finally:
        if others:
            testbed("load-others", "0", "--cluster", bench.key)
    with bench.phase("settle"):
        settle()


def settle(quiet_load: float = 2.0, longest: float = 120.0) -> None:
    """Waits (up to ``longest`` s) for the load of the cleanup (7,000 cancelled jobs) to pass."""
    deadline = time.monotonic() + longest
    while loadavg() > quiet_load and time.monotonic() < deadline:
        time.sleep(5)


def measure_original(bench: Bench, session_ids: Sequence[str]) -> None:
    pipelines = build(bench, session_ids)
    client = plain_client(bench.info, bench.info["clusters"][bench.key]["user"])
    ids: list[str] = []
    try:
        with bench.phase(f"original way, {len(pipelines)} pipelines"):
            commands, sessions, seconds, ids = original_submission(client, pipelines)
        bench.add("original_cmds", commands)
        bench.add("original_sftp_sessions", sessions)
        bench.add("original_s", seconds)
    finally:
        client.close()
        cancel_and_wait(bench.server, ids, [p.resolved.token for p in pipelines])
        remove_run_files(bench.server, bench.project, pipelines)
        bench.forget(pipelines)


def remove_leftovers(server: Server) -> None:
    """Removes the projects of an earlier benchmark run that was killed before its cleanup (their bare
    session ids would be ambiguous with this run's): only ``scale-XXXXXX`` folders, which only this
    script creates, on the testbed."""
    roots = " ".join(shlex.quote(str(root)) for root in (server.storage_root, server.working_root))
    each = 'for p in "$root"/scale-??????; do [ -d "$p" ] && echo "$p" && rm -rf -- "$p"; done'
    command = f"for root in {roots}; do {each}; done; true"
    removed = server.transport.run(command, timeout=600).stdout.split()
    if removed:
        print(f"removed the leftovers of an interrupted run: {', '.join(removed)}", flush=True)


def run_cluster(key: str, args: argparse.Namespace, scratch: Path) -> Bench:
    profile, info = testbed_profile(key, name=f"bench-scale-{key}", command_timeout=1800)
    server = Server(profile)
    configs = long_running_configs(Path(tempfile.mkdtemp(dir=scratch)))
    bench = Bench(key, server, info, f"scale-{uuid.uuid4().hex[:6]}", configs, args)
    bench.time_probes()
    largest = max(args.sizes)
    ids = [s for names in session_names(largest + 1).values() for s in names]
    remove_leftovers(server)
    try:
        with bench.phase(f"generate {len(ids)} sessions"):
            generate_sessions(server, bench.project, session_names(largest + 1))
        for number in range(args.rounds):
            print(f"[{key}] round {number + 1} of {args.rounds} (load {loadavg():.2f})", flush=True)
            measure_round(bench, ids[0], ids[1:], number)
        if args.original:
            print(f"[{key}] the original way, {args.original} pipelines", flush=True)
            measure_original(bench, ids[1 : args.original + 1])
    finally:
        live = [p for p in bench.created if p.is_running]
        cancel_and_wait(server, job_ids(live), [p.resolved.token for p in bench.created])
        remove_run_files(server, bench.project, bench.created)
        server.remove(server.storage_root / bench.project)
        server.close()
    return bench


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    numbers = lambda text: sorted({int(part) for part in text.split(",")})  # noqa: E731
    parser.add_argument("--sizes", type=numbers, default=[1, 10, 100, 1000], help="pipelines in flight")
    parser.add_argument("--clusters", type=lambda t: t.split(","), default=["acct", "noacct"])
    parser.add_argument("--rounds", type=int, default=3, help="build + submit + poll rounds per cluster")
    parser.add_argument("--repeat", type=int, default=3, help="cycles measured per size and round")
    parser.add_argument("--original", type=int, default=100, help="pipelines the original way (0: skip)")
    parser.add_argument("--others", type=int, default=1000, help="another user's held jobs (0: skip)")
    parser.add_argument("--profile", action="store_true", help="cProfile one cycle at the largest size")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    testbed("start")
    started = time.monotonic()
    if len(args.clusters) > 1:  # one process per cluster: each one's memory figures are its own
        argv = sys.argv[1:]
        argv = [
            a for i, a in enumerate(argv) if not (a.startswith("--clusters") or argv[i - 1] == "--clusters")
        ]
        for key in args.clusters:
            subprocess.run([sys.executable, __file__, *argv, f"--clusters={key}"], check=True)
    else:
        SftpRequests.install()
        with tempfile.TemporaryDirectory(prefix="sl-bench-scale-") as scratch:
            os.environ["SL_PIPELINES_DATA_DIR"] = str(Path(scratch) / "data")
            bench = run_cluster(args.clusters[0], args, Path(scratch))
        print_report(bench.key, bench.args, bench.samples, bench.loads)
    print(f"\nWhole run: {(time.monotonic() - started) / 60:.1f} min; median [min..max] over every sample.")


if __name__ == "__main__":
    main()
