"""Data archiving vs a checked copy by hand (``cp -a`` + ``xxhsum`` + ``rm``) of the same tree, side by side.

One run generates a session-like tree (default 550 MB in 3,000 files, nested folders, unicode names),
then alternates, ``--repeat`` times each:

* **archive**: ``archive_session`` (copy hashed as it is read; synced in batches with ``syncfs``, each
  batch dropped from the page cache and read back from the disk while the next is copied, and verified
  file by file; record written; working copy moved aside and deleted file by file after a last hash);
* **checked copy**: ``cp -a W S``, ``xxhsum -H2`` of every file of W, ``xxhsum -c`` of the copy,
  ``rm -rf W``; nothing is synced, so the copy may still be in memory when it is "checked";
* **checked copy + sync**: the same with ``sync -f`` on the copy before it is checked (what the
  archive's durability costs the shell way).

Every run starts from a fresh working copy (copied from the template and synced, untimed), so the
source is in the page cache for all three. It prints the median, the spread (min-max) and the ratio of
medians, the paired ratio (each archive run over the checked copy of the same round), and flags a run
during which other processes used more than a quarter of the machine's CPUs (their load skews it; the
kernel's writeback is not counted as others). Needs ``xxhsum`` (Debian:
``apt-get install xxhash``; installed when missing and running as root).

    .venv/bin/python scripts/bench_archive.py [--size-mb 550] [--files 3000] [--repeat 5] [--root DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sl_pipelines.core.layout import SessionPaths
from sl_pipelines.workers.archiving import archive_session

#: Fraction of the machine's CPUs that other processes may use before a run is flagged as skewed.
SKEW = 0.25
#: The flag of a kernel thread in /proc/PID/stat.
KERNEL_THREAD = 0x00200000
NAMES = ("plane", "cellules", "Zellen", "細胞", "séance", "trace")


@dataclass(frozen=True)
class Run:
    """One timed run: seconds of wall clock, and the share of the CPUs others used meanwhile."""

    seconds: float
    others: float

    @property
    def skewed(self) -> bool:
        return self.others > SKEW


def ensure_xxhsum() -> None:
    """Installs Debian's xxhash package when xxhsum is missing (root only)."""
    if shutil.which("xxhsum"):
        return
    if os.geteuid() != 0:
        raise SystemExit("xxhsum is missing: apt-get install xxhash")
    print("installing xxhsum (apt-get install xxhash) ...")
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "xxhash"], check=True)


def generate(template: Path, size_mb: int, files: int, seed: int) -> None:
    """Writes ``files`` files (about ``size_mb`` MB in all, sizes skewed like real data) in nested folders."""
    rng = random.Random(seed)
    weights = [rng.paretovariate(1.2) for _ in range(files)]
    scale = size_mb * 1_000_000 / sum(weights)
    block = rng.randbytes(4 * 1024 * 1024)
    for index, weight in enumerate(weights):
        folder = template / f"{NAMES[index % len(NAMES)]}_{index % 7}" / f"part {index % 13}"
        folder.mkdir(parents=True, exist_ok=True)
        size = max(1, int(weight * scale))
        with (folder / f"{NAMES[index % 5]}-{index:05d}.bin").open("wb") as stream:
            stream.write(index.to_bytes(8, "little"))
            while size > 0:
                stream.write(block[: min(size, len(block))])
                size -= len(block)


def _others_cpu() -> float:
    """CPU seconds used so far by every other user process and its reaped children (kernel threads,
    such as the writeback that our own fsyncs cause, are left out)."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[6]) & KERNEL_THREAD:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
    return total / os.sysconf("SC_CLK_TCK")


def timed(action: Callable[[], None]) -> Run:
    """Runs ``action`` and measures its wall clock and the CPU share other processes took meanwhile."""
    others0 = _others_cpu()
    began = time.perf_counter()
    action()
    seconds = time.perf_counter() - began
    others = (_others_cpu() - others0) / (seconds * (os.cpu_count() or 1))
    return Run(seconds, others)


def fresh_session(root: Path, template: Path) -> SessionPaths:
    """A session whose working copy is a synced copy of the template, and no archive."""
    for volume in ("storage", "working"):
        shutil.rmtree(root / volume, ignore_errors=True)
    paths = SessionPaths(PurePosixPath(root / "storage"), PurePosixPath(root / "working"), "p", "a", "s")
    (Path(paths.storage_session) / "raw_data").mkdir(parents=True)
    Path(paths.working_session).mkdir(parents=True)
    subprocess.run(["cp", "-a", str(template), str(paths.processed_data)], check=True)
    subprocess.run(["sync"], check=True)
    return paths


def by_hand(paths: SessionPaths, sync: bool) -> None:
    """cp -a, xxhsum of the source, (sync,) xxhsum -c of the copy, rm -rf of the source."""
    source, copy = str(paths.processed_data), str(paths.archived_processed_data)
    sums = Path(paths.storage_session) / "sums.xxh128"
    subprocess.run(["cp", "-a", source, copy], check=True)
    script = 'find . -type f -print0 | xargs -0 xxhsum -H2 > "$1" 2>/dev/null'
    subprocess.run(["sh", "-c", script, "sh", str(sums)], cwd=source, check=True)
    if sync:
        subprocess.run(["sync", "-f", copy], check=True)
    subprocess.run(["xxhsum", "-c", "--status", str(sums)], cwd=copy, check=True, stderr=subprocess.DEVNULL)
    subprocess.run(["rm", "-rf", source], check=True)


def _archive(paths: SessionPaths) -> None:
    archive_session(paths)


def describe(name: str, runs: list[Run], reference: float | None) -> str:
    times = [r.seconds for r in runs]
    median = statistics.median(times)
    spread = f"{min(times):6.2f}-{max(times):6.2f}"
    ratio = f"{median / reference:5.2f}x" if reference else "  1.00x"
    skewed = sum(r.skewed for r in runs)
    note = f"  {skewed} run(s) skewed by load" if skewed else ""
    return f"{name:<24} {median:7.2f} s   {spread} s   {ratio}{note}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=550)
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=5, help="runs of each (at least 3)")
    parser.add_argument("--root", type=Path, default=Path("/var/tmp"), help="a folder on the disk to measure")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ensure_xxhsum()
    with tempfile.TemporaryDirectory(prefix="sl-bench-archive-", dir=args.root) as temp:
        root = Path(temp)
        generate(root / "template", args.size_mb, args.files, args.seed)
        runs = max(3, args.repeat)
        print(f"tree: {args.files} files, {args.size_mb} MB, on {root} ({runs} runs each, alternating)")
        methods: dict[str, Callable[[SessionPaths], None]] = {
            "checked copy (cp+xxhsum)": lambda p: by_hand(p, sync=False),
            "archive_session": _archive,
            "checked copy + sync": lambda p: by_hand(p, sync=True),
        }
        results: dict[str, list[Run]] = {name: [] for name in methods}
        for round_ in range(runs):
            for name, method in methods.items():
                paths = fresh_session(root, root / "template")
                results[name].append(timed(lambda m=method, p=paths: m(p)))
                flag = " (skewed by load)" if results[name][-1].skewed else ""
                print(f"  run {round_ + 1} {name:<24} {results[name][-1].seconds:6.2f} s{flag}")
        report(results)


def report(results: dict[str, list[Run]]) -> None:
    """Medians, spreads and ratios; the paired ratio compares runs of the same round (same load)."""
    checked = results["checked copy (cp+xxhsum)"]
    baseline = statistics.median(r.seconds for r in checked)
    print(f"\n{'':<24} {'median':>9}   {'min-max':>15}   ratio of medians to the checked copy")
    for name, runs in results.items():
        print(describe(name, runs, None if runs is checked else baseline))
    for name in ("archive_session", "checked copy + sync"):
        pairs = [r.seconds / c.seconds for r, c in zip(results[name], checked, strict=True)]
        calm = [
            p for p, r, c in zip(pairs, results[name], checked, strict=True) if not (r.skewed or c.skewed)
        ]
        print(
            f"paired ratio {name} / checked copy: median {statistics.median(pairs):.2f}x "
            f"(min-max {min(pairs):.2f}-{max(pairs):.2f}x); rounds without load: "
            + (f"median {statistics.median(calm):.2f}x of {len(calm)}" if calm else "none")
        )


if __name__ == "__main__":
    main()
