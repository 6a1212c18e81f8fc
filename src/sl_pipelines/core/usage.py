"""What a finished job used: parsers of ``sacct``, ``scontrol`` and the job's own usage file (pure: no I/O).

Three sources, merged into one :class:`Measured` per job:

* ``sacct`` (clusters with accounting): times, node, CPUs, requested memory and time, total CPU time from
  the job's allocation row, and peak memory (``MaxRSS``) from its steps (``.batch``, ``.extern``): Slurm
  keeps MaxRSS only on steps, sampled every ``JobAcctGatherFrequency`` seconds, so a short job may have
  none;
* ``scontrol show job`` (clusters without accounting, while slurmctld keeps the finished job): times,
  node, CPUs, requested memory and time;
* the job itself: ``sl-worker`` writes ``usage-<job id>.json`` into the run's ``.usage`` folder as it
  ends, with its own CPU time and peak resident memory (``getrusage`` of itself and its children).

Units: Slurm's K/M/G/T are binary (KiB, MiB, ...); every memory figure here is in MiB ("MB" as Slurm
says), ``ru_maxrss`` is in KiB on Linux.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any

from sl_pipelines.core.states import JobState

SACCT_USAGE_FIELDS = (
    "JobID,State,Submit,Start,End,ElapsedRaw,TotalCPU,AllocCPUS,MaxRSS,ReqMem,NodeList,TimelimitRaw"
)
"""The ``sacct -P -o`` fields the usage query asks for, in this order (no -X: MaxRSS lives on steps)."""

USAGE_FOLDER = ".usage"
"""Under a run's job folder: each job's own usage file, ``usage-<job id>.json``. A success's cleanup
leaves it until the manager has read the files (it goes with the record's next write)."""

USAGE_FILE_PREFIX = "usage-"
"""A job's own usage file: ``<run's job folder>/.usage/usage-<job id>.json``."""

USAGE_DIR_VARIABLE = "SL_USAGE_DIR"
"""The variable a job script exports: the folder where ``sl-worker`` writes its usage file."""

_UNITS = {"K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0 * 1024.0, "P": 1024.0**3}


@dataclass(frozen=True)
class Measured:
    """What is known of one finished job's use of resources (None: not known).

    Attributes:
        source: ``sacct`` when the accounting database gave the record, else ``job``.
        state: Slurm's final state (``COMPLETED``, ``OUT_OF_MEMORY`` ...), "" when not known.
        submitted_at, started_at, ended_at: ISO 8601 times as the source gave them.
        elapsed_s: wall-clock run time.
        cpu_s: user + system CPU time of everything the job ran.
        cpus: CPUs allocated.
        max_rss_mb: peak resident memory (MiB).
        requested_memory_mb: the memory asked for (MiB; per node).
        time_limit_minutes: the time limit.
        node: where it ran.
        pending: the accounting database has no final record of the job yet (slurmdbd lags behind the
            controller): these are the job's own figures only, and asking again a moment later may
            give Slurm's.
    """

    source: str = "job"
    state: str = ""
    submitted_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    elapsed_s: float | None = None
    cpu_s: float | None = None
    cpus: int | None = None
    max_rss_mb: float | None = None
    requested_memory_mb: float | None = None
    time_limit_minutes: int | None = None
    node: str | None = None
    pending: bool = False

    def filled_from(self, other: Measured | None) -> Measured:
        """These figures, each unknown one taken from ``other``; peak memory is the larger of both (a
        sampled MaxRSS misses short peaks that the job's own ``getrusage`` sees)."""
        if other is None:
            return self
        values = {f.name: getattr(other, f.name) for f in fields(self) if getattr(self, f.name) is None}
        values.pop("pending", None)
        if self.max_rss_mb is not None and other.max_rss_mb is not None:
            values["max_rss_mb"] = max(self.max_rss_mb, other.max_rss_mb)
        return replace(self, **{k: v for k, v in values.items() if v is not None})


# ------------------------------------------------------------------------------------------ units


def memory_mb(text: str, cpus: int | None = None) -> float | None:
    """``216000K``, ``1.5G``, ``512M``, ``4000Mc`` (per CPU: times ``cpus``), ``4000Mn`` → MiB; a bare
    number is bytes (sacct's MaxRSS without a unit). None when empty or unreadable."""
    match = re.fullmatch(r"\s*([\d.]+)([KMGTP]?)([cn]?)\s*", text or "")
    if not match:
        return None
    value = float(match.group(1))
    unit, per = match.group(2), match.group(3)
    mb = value * _UNITS[unit] if unit else value / (1024 * 1024)
    return mb * cpus if per == "c" and cpus else mb


def duration_s(text: str) -> float | None:
    """Slurm's ``[D-][HH:]MM:SS[.mmm]`` (TotalCPU, RunTime, TimeLimit) → seconds; None when unreadable."""
    match = re.fullmatch(r"\s*(?:(\d+)-)?(\d+(?::\d+){0,2}(?:\.\d+)?)\s*", text or "")
    if not match:
        return None
    parts = [float(part) for part in match.group(2).split(":")]
    while len(parts) < 3:
        parts.insert(0, 0.0)
    hours, minutes, seconds = parts
    return int(match.group(1) or 0) * 86400 + hours * 3600 + minutes * 60 + seconds


def _time(text: str) -> str | None:
    """An ISO time from Slurm, or None for ``Unknown``, ``None`` and empty."""
    text = (text or "").strip()
    return text if re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d.*", text) else None


def _int(text: str) -> int | None:
    text = (text or "").strip()
    return int(text) if text.isdigit() else None


def _final(state_text: str) -> bool:
    return JobState.parse(state_text.strip().split(" ")[0]).is_terminal


# ------------------------------------------------------------------------------------------ sources


def parse_sacct_usage(lines: Iterable[str]) -> dict[str, Measured]:
    """The finished jobs of ``sacct -n -P -o`` :data:`SACCT_USAGE_FIELDS` output, by job id.

    A job whose allocation row is not final yet (slurmdbd lags behind) is left out: asked again later.
    Peak memory is the largest MaxRSS of the job's steps.
    """
    jobs: dict[str, Measured] = {}
    peaks: dict[str, float] = {}
    for line in lines:
        cells = line.split("|")
        if len(cells) != 12 or not re.fullmatch(r"\d+(_\d+)?(\.[\w+]+)?", cells[0]):
            continue
        job_id, step = cells[0].partition(".")[::2]
        if step:
            rss = memory_mb(cells[8])
            if rss is not None:
                peaks[job_id] = max(peaks.get(job_id, 0.0), rss)
            continue
        if not _final(cells[1]):
            continue
        cpus = _int(cells[7])
        elapsed = _int(cells[5])
        jobs[job_id] = Measured(
            source="sacct",
            state=cells[1].strip().split(" ")[0],
            submitted_at=_time(cells[2]),
            started_at=_time(cells[3]),
            ended_at=_time(cells[4]),
            elapsed_s=float(elapsed) if elapsed is not None else None,
            cpu_s=duration_s(cells[6]),
            cpus=cpus,
            max_rss_mb=memory_mb(cells[8]),
            requested_memory_mb=memory_mb(cells[9], cpus),
            time_limit_minutes=_int(cells[11]),
            node=cells[10].strip() or None,
        )
    return {
        job_id: replace(m, max_rss_mb=max(m.max_rss_mb or 0.0, peaks[job_id])) if job_id in peaks else m
        for job_id, m in jobs.items()
    }


_SCONTROL_FIELD = re.compile(r"(?:^| )(\w+)=(\S*)")


def parse_scontrol_usage(lines: Iterable[str]) -> dict[str, Measured]:
    """The finished jobs of ``scontrol -o show job`` lines, by job id (``<array>_<task>`` for tasks)."""
    jobs: dict[str, Measured] = {}
    for line in lines:
        cells = dict(_SCONTROL_FIELD.findall(line))
        if "JobId" not in cells or not _final(cells.get("JobState", "")):
            continue
        job_id = cells["JobId"]
        if cells.get("ArrayJobId") and cells.get("ArrayTaskId"):
            job_id = f"{cells['ArrayJobId']}_{cells['ArrayTaskId']}"
        cpus = _int(cells.get("NumCPUs", ""))
        if "MinMemoryNode" in cells:
            requested = memory_mb(cells["MinMemoryNode"])
        else:
            per_cpu = memory_mb(cells.get("MinMemoryCPU", ""))
            requested = per_cpu * cpus if per_cpu is not None and cpus else None
        limit = duration_s(cells.get("TimeLimit", ""))
        nodes = cells.get("NodeList", "")
        jobs[job_id] = Measured(
            source="job",
            state=cells["JobState"],
            submitted_at=_time(cells.get("SubmitTime", "")),
            started_at=_time(cells.get("StartTime", "")),
            ended_at=_time(cells.get("EndTime", "")),
            elapsed_s=duration_s(cells.get("RunTime", "")),
            cpus=cpus,
            requested_memory_mb=requested,
            time_limit_minutes=round(limit / 60) if limit is not None else None,
            node=nodes if nodes and nodes != "(null)" else None,
        )
    return jobs


def parse_job_usage(text: str) -> Measured | None:
    """A job's own usage file (written by :func:`job_usage_text`), or None when it is not one."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None

    def number(key: str) -> float | None:
        value = data.get(key)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    cpus, memory = number("cpus"), number("requested_memory_mb")
    started, ended = data.get("started_at"), data.get("ended_at")
    return Measured(
        source="job",
        started_at=started if isinstance(started, str) else None,
        ended_at=ended if isinstance(ended, str) else None,
        elapsed_s=number("elapsed_s"),
        cpu_s=number("cpu_s"),
        cpus=int(cpus) if cpus else None,
        max_rss_mb=number("max_rss_mb"),
        requested_memory_mb=memory or None,
        node=str(data["node"]) if data.get("node") else None,
    )


def job_usage_text(
    *,
    cpu_s: float,
    max_rss_kib: int,
    started_at: str,
    ended_at: str,
    elapsed_s: float,
    node: str,
    environment: Mapping[str, str],
) -> str:
    """The usage file a job writes about itself (``ru_maxrss`` in KiB; CPUs and memory as Slurm told it)."""
    cpus = _int(environment.get("SLURM_CPUS_PER_TASK", ""))
    memory = _int(environment.get("SLURM_MEM_PER_NODE", ""))
    data: dict[str, Any] = {
        "cpu_s": round(cpu_s, 3),
        "max_rss_mb": round(max_rss_kib / 1024, 1),
        "started_at": started_at,
        "ended_at": ended_at,
        "elapsed_s": round(elapsed_s, 3),
        "node": node,
        "cpus": cpus,
        "requested_memory_mb": memory,
    }
    return json.dumps(data) + "\n"


def slurm_job_id(environment: Mapping[str, str]) -> str | None:
    """The job's id as the manager knows it: ``<array>_<task>`` for an array task, else SLURM_JOB_ID."""
    array, task = environment.get("SLURM_ARRAY_JOB_ID"), environment.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return environment.get("SLURM_JOB_ID") or None


# ------------------------------------------------------------------------------------------ the record


@dataclass(frozen=True)
class JobFacts:
    """What the manager knows of a job, beside what it used.

    Attributes:
        name: the job's name in the run (its Slurm name).
        stage: the stage it belongs to.
        attempt: which attempt of the job this id was (1 unless it was retried).
        state: Slurm's final state as the manager saw it (used when the source has none).
        cpus, memory_mb, time_limit_minutes: what the job asked for (used when the source has none; 0
            when not known).
    """

    name: str
    stage: int
    attempt: int
    state: str
    cpus: int
    memory_mb: float
    time_limit_minutes: int


def usage_record(measured: Measured, facts: JobFacts) -> dict[str, Any]:
    """One job's entry in the run's ``usage`` (keys as the run record documents them; an unknown figure
    is left out)."""
    cpus = measured.cpus or facts.cpus or None
    record: dict[str, Any] = {
        "name": facts.name,
        "stage": facts.stage,
        "attempt": facts.attempt,
        "state": measured.state or facts.state,
        "node": measured.node or "",
        "submitted_at": measured.submitted_at,
        "started_at": measured.started_at,
        "ended_at": measured.ended_at,
        "queue_wait_s": _seconds_between(measured.submitted_at, measured.started_at),
        "elapsed_s": round(measured.elapsed_s, 3) if measured.elapsed_s is not None else None,
        "cpu_s": measured.cpu_s,
        "cpus": cpus,
        "max_rss_mb": measured.max_rss_mb,
        "requested_memory_mb": measured.requested_memory_mb or facts.memory_mb or None,
        "time_limit_minutes": measured.time_limit_minutes or facts.time_limit_minutes or None,
        "source": measured.source,
    }
    if measured.cpu_s is not None and measured.elapsed_s and cpus:
        record["cpu_efficiency"] = round(min(1.0, measured.cpu_s / (measured.elapsed_s * cpus)), 3)
    return {key: value for key, value in record.items() if value is not None}


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if start is None or end is None:
        return None
    try:
        first, second = datetime.fromisoformat(start), datetime.fromisoformat(end)
        return max(0.0, (second - first).total_seconds())
    except (TypeError, ValueError):  # unreadable, or one with a zone and one without
        return None
