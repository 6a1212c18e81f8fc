"""The session selection's server side, bash alone against bash + one python3 reader, side by side.

Writes a project of ``--sessions`` sessions (default 1,000), each with its session data and all nine
tracker files, into a temporary folder on this machine, then runs the selection program (the command
``sl-tracker status 'proj/*/*'`` and ``sl-process ... 'proj/*/*' --pending`` send to the server) both
ways, taking turns, ``--repeat`` times; prints medians, the spread and the ratio, with the load average.

    .venv/bin/python scripts/bench_selection.py [--sessions 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path, PurePosixPath

from sl_pipelines.core.selection import build_select, parse_select, pattern_parts
from sl_pipelines.vocabulary import TrackerFileNames


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    trackers = [name.value for name in TrackerFileNames]
    with tempfile.TemporaryDirectory(prefix="sl-bench-select-") as scratch:
        root = Path(scratch) / "storage"
        for index in range(args.sessions):
            session = (
                root
                / "proj"
                / f"A{index // 100:02d}"
                / f"2026-01-01-10-{index // 60 % 60:02d}-{index % 60:02d}"
            )
            (session / "raw_data").mkdir(parents=True)
            (session / "raw_data" / "session_data.yaml").write_text("planes: 2\n")
            (session / "tracking_data").mkdir()
            for name in trackers:
                (session / "tracking_data" / name).write_text("manager_id: null\njob_count: 0\n" * 4)
        times: dict[str, list[float]] = {"bash": [], "python3": []}
        for _ in range(args.repeat):
            for label, values in times.items():
                command, data = build_select(
                    PurePosixPath(root), pattern_parts("proj/*/*"), trackers, reader=label == "python3"
                )
                started = time.perf_counter()
                done = subprocess.run(["sh", "-c", command], input=data, capture_output=True, check=True)
                values.append(time.perf_counter() - started)
                found = parse_select(done.stdout.decode(), PurePosixPath(root), PurePosixPath("/w"))
                assert len(found) == args.sessions and all(len(s.trackers) == len(trackers) for s in found)
    print(f"{args.sessions} sessions x {len(trackers)} trackers, {args.repeat} runs each, taking turns "
          f"(load average {os.getloadavg()[0]:.2f}):")  # fmt: skip
    for label, values in times.items():
        print(f"  {label:8} median {statistics.median(values):6.2f} s  [{min(values):.2f}-{max(values):.2f}]")
    ratio = statistics.median(times["bash"]) / statistics.median(times["python3"])
    print(f"  python3 reader {ratio:.1f}x faster than bash + base64 per file")


if __name__ == "__main__":
    main()
