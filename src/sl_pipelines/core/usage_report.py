"""What the jobs of runs used, per stage, and the requests that are far off (pure: no I/O).

The entries are the runs' ``usage`` records (see :func:`sl_pipelines.core.usage.usage_record`), each
with its pipeline, stage and job kind (the definition's job name: ``plane`` for ``plane-0`` ...).
:func:`stage_totals` sums them per stage (CPU-hours, CPU efficiency, peak memory against the request,
the longest job against its time limit); :func:`request_hints` says, per job kind, which request to
change ("suite2p plane: used 1.1 of 80 GB — lower memory_gb").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

LOW_SHARE = 0.25
"""A request is far off when the jobs used less than this share of it ..."""

MEMORY_SLACK_MB = 1024.0
"""... and the memory left unused is at least this much (a few hundred MB spare are not worth a hint) ..."""

TIME_SLACK_S = 3600.0
"""... or the time left unused is at least an hour."""

HIGH_SHARE = 0.9
"""Jobs that used more than this share of a request ran close to the limit: raise it."""


@dataclass(frozen=True)
class UsageEntry:
    """One job's usage record with where it belongs.

    Attributes:
        pipeline: the pipeline's short name.
        stage: the stage number; ``stage_name`` its name.
        kind: the definition's job name (fanned-out jobs share it).
        record: the usage record.
    """

    pipeline: str
    stage: int
    stage_name: str
    kind: str
    record: Mapping[str, Any]


@dataclass(frozen=True)
class StageTotals:
    """The jobs of one stage (of one pipeline kind, over all its runs) and what they used together.

    Attributes:
        pipeline, stage, stage_name: which stage.
        jobs: usage records summed (attempts count separately).
        cpu_hours: CPU time used, in hours.
        allocated_cpu_hours: elapsed times CPUs allocated, in hours.
        max_rss_mb: the largest peak memory; ``requested_memory_mb`` the largest request.
        longest_s: the longest elapsed time; ``time_limit_minutes`` the largest limit.
        max_queue_wait_s: the longest wait in the queue.
    """

    pipeline: str
    stage: int
    stage_name: str
    jobs: int
    cpu_hours: float
    allocated_cpu_hours: float
    max_rss_mb: float | None
    requested_memory_mb: float | None
    longest_s: float | None
    time_limit_minutes: int | None
    max_queue_wait_s: float | None

    @property
    def cpu_efficiency(self) -> float | None:
        """CPU time / (elapsed x CPUs) over the stage's jobs."""
        return self.cpu_hours / self.allocated_cpu_hours if self.allocated_cpu_hours > 0 else None

    def as_json(self) -> dict[str, Any]:
        """The totals as JSON-ready values."""
        efficiency = self.cpu_efficiency
        return {
            "pipeline": self.pipeline,
            "stage": self.stage,
            "stage_name": self.stage_name,
            "jobs": self.jobs,
            "cpu_hours": round(self.cpu_hours, 6),
            "cpu_efficiency": round(efficiency, 3) if efficiency is not None else None,
            "max_rss_mb": self.max_rss_mb,
            "requested_memory_mb": self.requested_memory_mb,
            "longest_s": self.longest_s,
            "time_limit_minutes": self.time_limit_minutes,
            "max_queue_wait_s": self.max_queue_wait_s,
        }


def _numbers(records: Iterable[Mapping[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in records if isinstance(r.get(key), int | float)]


def _largest(records: Sequence[Mapping[str, Any]], key: str) -> float | None:
    values = _numbers(records, key)
    return max(values) if values else None


def stage_totals(entries: Iterable[UsageEntry]) -> list[StageTotals]:
    """The entries summed per pipeline kind and stage, in stage order."""
    groups: dict[tuple[str, int], list[UsageEntry]] = {}
    for entry in entries:
        groups.setdefault((entry.pipeline, entry.stage), []).append(entry)
    totals = []
    for (pipeline, stage), members in sorted(groups.items()):
        records = [m.record for m in members]
        limit = _largest(records, "time_limit_minutes")
        allocated = sum(
            float(r["elapsed_s"]) * float(r["cpus"])
            for r in records
            if isinstance(r.get("elapsed_s"), int | float) and isinstance(r.get("cpus"), int | float)
        )
        totals.append(
            StageTotals(
                pipeline=pipeline,
                stage=stage,
                stage_name=members[0].stage_name,
                jobs=len(members),
                cpu_hours=sum(_numbers(records, "cpu_s")) / 3600,
                allocated_cpu_hours=allocated / 3600,
                max_rss_mb=_largest(records, "max_rss_mb"),
                requested_memory_mb=_largest(records, "requested_memory_mb"),
                longest_s=_largest(records, "elapsed_s"),
                time_limit_minutes=int(limit) if limit is not None else None,
                max_queue_wait_s=_largest(records, "queue_wait_s"),
            )
        )
    return totals


def request_hints(entries: Iterable[UsageEntry]) -> list[str]:
    """One sentence per request that is far off, per pipeline kind and job kind (memory, time, CPUs)."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for entry in entries:
        groups.setdefault((entry.pipeline, entry.kind), []).append(entry.record)
    hints: list[str] = []
    for (pipeline, kind), records in sorted(groups.items()):
        label = f"{pipeline} {kind}"
        hints += [h for h in (_memory_hint(label, records), _time_hint(label, records)) if h]
        hints += [h for h in (_cpu_hint(label, records),) if h]
    return hints


def _gb(mb: float) -> str:
    gb = mb / 1024
    return f"{gb:.0f}" if gb >= 10 or gb == int(gb) else f"{gb:.1f}"


def _memory_hint(label: str, records: Sequence[Mapping[str, Any]]) -> str:
    peak, asked = _largest(records, "max_rss_mb"), _largest(records, "requested_memory_mb")
    if any(r.get("state") == "OUT_OF_MEMORY" for r in records):
        return f"{label}: ran out of memory with {_gb(asked or 0)} GB — raise memory_gb"
    if peak is None or not asked:
        return ""
    used = f"{peak / 1024:.1f}" if peak >= 1024 else f"{peak:.0f} MB"
    if peak < LOW_SHARE * asked and asked - peak >= MEMORY_SLACK_MB:
        return f"{label}: used {used} of {_gb(asked)} GB — lower memory_gb"
    if peak > HIGH_SHARE * asked:
        return f"{label}: used {used} of {_gb(asked)} GB, close to the limit — raise memory_gb"
    return ""


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _time_hint(label: str, records: Sequence[Mapping[str, Any]]) -> str:
    longest, limit = _largest(records, "elapsed_s"), _largest(records, "time_limit_minutes")
    if any(r.get("state") == "TIMEOUT" for r in records):
        return f"{label}: hit its time limit of {limit or 0:.0f} min — raise time_limit_minutes"
    if longest is None or not limit:
        return ""
    limit_s = limit * 60
    if longest < LOW_SHARE * limit_s and limit_s - longest >= TIME_SLACK_S:
        return f"{label}: ran at most {_minutes(longest)} of {limit:.0f} min — lower time_limit_minutes"
    if longest > HIGH_SHARE * limit_s:
        close = f"{label}: ran {_minutes(longest)} of {limit:.0f} min, close to the limit"
        return f"{close} — raise time_limit_minutes"
    return ""


def _cpu_hint(label: str, records: Sequence[Mapping[str, Any]]) -> str:
    cpus = _largest(records, "cpus")
    used, elapsed = sum(_numbers(records, "cpu_s")), sum(_numbers(records, "elapsed_s"))
    if not cpus or cpus < 2 or elapsed <= 0 or not _numbers(records, "cpu_s"):
        return ""
    busy = used / elapsed  # CPUs kept busy on average
    if busy < cpus / 2:
        return f"{label}: kept {busy:.1f} of {cpus:.0f} CPUs busy — lower cpus"
    return ""


def hours(value: float) -> str:
    """CPU-hours for a table: ``0.0012``, ``1.25``, ``130``."""
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.2f}" if value >= 1 else f"{value:.4f}"
