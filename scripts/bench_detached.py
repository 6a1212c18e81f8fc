"""How long a run waits between stages: detached (Slurm's dependencies) against attached (a manager's poll).

Runs on the real testbed, on the cluster with accounting (``slacct``: sacct gives each job's Start and
End). For each mode it runs a 3-stage suite2p pipeline (binarize -> 4 planes -> combine) several times
and measures, from Slurm's own records, the gap between the last job of stage k ending and the first
job of stage k+1 starting. The attached manager polls at the default interval (5 s; ``--poll``), which
backs off while nothing changes, exactly as ``sl-process`` does.

Goal (issue 10): detached <= 2 s on the testbed, against the attached mode's poll interval.

    .venv/bin/python scripts/bench_detached.py [--repeat 3] [--poll 5]
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import yaml
from testbed_profile import testbed_profile

from sl_pipelines.adapters.profiles import save_profile
from sl_pipelines.adapters.server import Server
from sl_pipelines.orchestration.journal import RunJournal
from sl_pipelines.orchestration.pipeline import default_configs_dir

ROOT = Path(__file__).resolve().parents[1]
PROCESS = [sys.executable, "-c", "from sl_pipelines.cli.process import main; raise SystemExit(main())"]


def configs(folder: Path) -> Path:
    data = yaml.safe_load((default_configs_dir() / "suite2p.yaml").read_text())
    data["stages"][0]["jobs"][0]["command"] += " --seconds 3"
    data["stages"][1]["jobs"][0]["command"] += " --seconds 3"
    (folder / "suite2p.yaml").write_text(yaml.safe_dump(data))
    return folder


def run_once(server: Server, profile_name: str, folder: Path, detached: bool, poll: float) -> RunJournal:
    project = f"bench-{uuid.uuid4().hex[:6]}"
    env = shlex.quote(server.environment.value)
    server.run(
        f"source {env}/bin/activate && sl-worker generate -q --storage-root "
        f"{shlex.quote(str(server.storage_root))} --project {project} --animal A1 --session s1 --planes 4",
        check=True,
    )
    argv = [*PROCESS, "suite2p", f"{project}/A1/s1", "--server", profile_name, "--configs", str(folder)]
    argv += ["--detach"] if detached else ["--poll-interval", str(poll), "--json"]
    subprocess.run(argv, check=True, capture_output=True, timeout=600)
    deadline = time.monotonic() + 600
    while True:
        records = server.read_files(server.working_root / "sl_jobs", "run.json")
        mine = [RunJournal.from_json(t, where="r") for t in records.values()]
        mine = [r for r in mine if r.sessions == (f"{project}/A1/s1",)]
        if mine and mine[0].status != "RUNNING":
            return mine[0]
        if time.monotonic() > deadline:
            raise SystemExit("the run did not end in time")
        time.sleep(1)


def gaps(server: Server, record: RunJournal) -> list[float]:
    """Seconds from the last job of each stage ending to the first job of the next one starting."""
    ids = ",".join(
        sorted({job_id.split("_")[0] for name, job_id in record.job_ids.items() if name != "settle"})
    )
    out = server.run(f"sacct -X -n -P -o JobID,JobName,Start,End -j {ids}", check=True).stdout
    stages: dict[int, list[tuple[datetime, datetime]]] = {}
    for line in out.splitlines():
        job_id, name, start, end = line.split("|")
        stage = _stage(job_id, name, record)
        if stage and start != "Unknown" and end != "Unknown":
            stages.setdefault(stage, []).append((datetime.fromisoformat(start), datetime.fromisoformat(end)))
    return [
        (min(s for s, _ in stages[k + 1]) - max(e for _, e in stages[k])).total_seconds()
        for k in sorted(stages)
        if k + 1 in stages
    ]


def _stage(job_id: str, name: str, record: RunJournal) -> int:
    for job, known in record.job_ids.items():
        if known == job_id and job != "settle":
            return int(job.split("-")[2])
    parts = name.split("-")
    return int(parts[2]) if len(parts) >= 3 and parts[2].isdigit() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--poll", type=float, default=5.0, help="the attached manager's poll interval")
    args = parser.parse_args()
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "testbed.sh"), "start"], check=True, stdout=subprocess.DEVNULL
    )
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SL_PIPELINES_CONFIG_DIR"] = f"{tmp}/config"
        os.environ["SL_PIPELINES_DATA_DIR"] = f"{tmp}/data"
        profile, _ = testbed_profile("acct", name="bench-detached")
        save_profile(profile)
        folder = configs(Path(tmp))
        results: dict[str, list[float]] = {"detached": [], "attached": []}
        with Server(profile) as server:
            for round_ in range(args.repeat):
                for mode in ("detached", "attached"):  # taking turns, so load hits both alike
                    record = run_once(server, profile.name, folder, mode == "detached", args.poll)
                    found = gaps(server, record)
                    results[mode] += found
                    print(f"round {round_ + 1} {mode}: {record.status}, gaps {[f'{g:.1f}' for g in found]} s")
            roots = (shlex.quote(str(server.storage_root)), shlex.quote(str(server.working_root)))
            server.run(f"rm -rf {roots[0]}/bench-* {roots[1]}/bench-*")
    print()
    print("stage-to-stage latency (last job of stage k ends -> first job of stage k+1 starts), seconds:")
    for mode, values in results.items():
        median, low, high = statistics.median(values), min(values), max(values)
        print(f"  {mode:9s} median {median:5.1f}  min {low:5.1f}  max {high:5.1f}  (n={len(values)})")
    ratio = statistics.median(results["attached"]) / max(statistics.median(results["detached"]), 0.1)
    print(f"  ratio attached/detached (medians): {ratio:.1f}x (Slurm records whole seconds)")
    print(f"load average now: {Path('/proc/loadavg').read_text().split()[:3]}")


if __name__ == "__main__":
    main()
