"""The figures of ``scripts/bench_scale.py``, printed as one table per cluster plus the goals' ratios."""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from bench_scale_ops import spread

BUSY_LOAD = 2.5
"""A one-minute load average above this (2 CPUs) before a phase: other work competed with it."""

CLUSTER_NAMES = {"acct": "slacct (sacct), user sltest", "noacct": "slnoacct (scontrol), user sltest2"}
ALONE = "1 alone"


@dataclass(frozen=True)
class Figures:
    """One cluster's samples, by metric name."""

    samples: dict[str, list[float]]

    def get(self, key: str, digits: int = 0) -> str:
        """``median [min..max]`` of a metric."""
        return spread(self.samples.get(key, []), digits)

    def median(self, key: str) -> float:
        return statistics.median(self.samples.get(key) or [float("nan")])

    def ratio(self, top: str, bottom: str) -> str:
        return f"{self.median(top) / self.median(bottom):.2f}x"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return " | ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return [line(header), "-+-".join("-" * w for w in widths), *(line(row) for row in rows)]


def _cycle_rows(args: argparse.Namespace, f: Figures) -> list[list[str]]:
    rows = []
    for label in [ALONE, *(str(s) for s in args.sizes)]:
        alone = label == ALONE
        name = "1, alone in the queue" if alone else f"{int(label):,} of {max(args.sizes):,} queued"
        others = ""
        if f.samples.get(f"probe_ms/others/{label}"):
            with_, without = f"probe_ms/others/{label}", f"probe_ms/no-others/{label}"
            others = f"{f.get(with_, 1)} vs {f.get(without, 1)} = {f.ratio(with_, without)}"
        rows.append(
            [
                name,
                f.get(f"cmds/{label}"),
                "" if alone else f.get(f"sftp/{label}"),
                f.get(f"cycle_ms/{label}", 1),
                "" if alone else f.get(f"probe_ms/{label}", 1),
                "" if alone else f.get(f"cpu_ms/{label}", 1),
                others,
            ]
        )
    return rows


def _goal_lines(args: argparse.Namespace, f: Figures) -> list[str]:
    largest = max(args.sizes)
    lines = [
        f"floor (`squeue --me; cat TRACKER`, one command): {f.get('floor_ms', 1)} ms; "
        f"1 pipeline alone / floor = {f.ratio(f'cycle_ms/{ALONE}', 'floor_ms')} (goal <= 1.5x)",
        *(
            [
                "the floor itself with the other user's jobs held vs none (Slurm's own cost of them): "
                f"{f.get('floor_ms/others', 1)} vs {f.get('floor_ms/no-others', 1)} ms = "
                f"{f.ratio('floor_ms/others', 'floor_ms/no-others')}"
            ]
            if f.samples.get("floor_ms/others")
            else []
        ),
        f"{largest:,} pipelines / 1 pipeline (same queue): {f.ratio(f'cycle_ms/{largest}', 'cycle_ms/1')} "
        "(goal <= 10x)",
        f"submission of {largest:,} pipelines ({7 * largest:,} jobs): {f.get('submit_exec/all')} commands in "
        f"{f.get('submit_cycles/all')} cycle(s), {f.get('submit_sftp/all')} SFTP requests, "
        f"{f.get('submit_s/all', 1)} s (goal <= 20 commands, <= 60 s)",
    ]
    if f.samples.get("original_s"):
        lines.append(
            f"the original way, {args.original} pipelines ({7 * args.original} jobs): "
            f"{f.get('original_cmds')} commands + {f.get('original_sftp_sessions')} SFTP sessions, "
            f"{f.get('original_s', 1)} s"
        )
    per_pipeline = spread([s * 1000 / largest for s in f.samples.get("build_s/all", [])], 1)
    changed = int(sum(sum(v) for k, v in f.samples.items() if k.startswith("changed/")))
    lines += [
        f"building {largest:,} pipelines from bare session ids (find_sessions, then create each): "
        f"{f.get('build_exec/all')} SSH commands + {f.get('build_sftp/all')} SFTP requests, "
        f"{f.get('build_s/all', 1)} s ({per_pipeline} ms per pipeline); one pipeline by create(bare id): "
        f"{f.get(f'build_exec/{ALONE}')} SSH commands + {f.get(f'build_sftp/{ALONE}')} SFTP requests, "
        f"{spread([s * 1000 for s in f.samples.get(f'build_s/{ALONE}', [])], 1)} ms",
        f"manager: peak RSS {f.get('peak_rss_mb')} MB (round 1 is a fresh manager's), RSS at {largest:,} in "
        f"flight {f.get('rss_mb')} MB; CPU per polling cycle at {largest:,} pipelines "
        f"{f.get(f'cpu_ms/{largest}', 1)} ms, of which garbage collection {f.get(f'gc_ms/{largest}', 1)} ms "
        "(goals <= 300 MB, <= 100 ms); journal files written during the "
        f"polling cycles: {f.get('journals_written')}; measured cycles that saw a change: {changed}",
    ]
    return lines


def print_report(
    key: str,
    args: argparse.Namespace,
    samples: dict[str, list[float]],
    loads: Sequence[tuple[str, float, float, float]],
) -> None:
    """Prints one cluster's figures: median [min..max] of every sample."""
    figures = Figures(samples)
    name = CLUSTER_NAMES.get(key, key)
    print(f"\n=== {name}: {args.rounds} round(s), {args.repeat} cycle(s) per size and round")
    header = ["pipelines in flight", "commands/cycle", "SFTP/cycle", "cycle ms", "probe ms", "manager CPU ms"]
    header.append(f"probe ms, {args.others:,} others held vs none = ratio (goal <= 1.2x)")
    print("\n".join(_table(header, _cycle_rows(args, figures))))
    print("\n".join(_goal_lines(args, figures)))
    print("phases: duration, load average (1 min) before -> after")
    for name, seconds, before, after in loads:
        note = "  (busy machine: figures skewed)" if before > BUSY_LOAD else ""
        print(f"  {name}: {seconds:.0f} s, load {before:.2f} -> {after:.2f}{note}")
