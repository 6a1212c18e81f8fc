"""What a run report shows, read from a run's record (pure: no I/O).

A run's record (the JSON of ``RunJournal``) says which jobs were submitted (``job_ids``), and, when the
retry and usage work recorded them, every attempt of a job (``attempts``) and what each Slurm job used
(``usage``). This module turns whatever of that is there into one :class:`Attempt` per Slurm job, in
stage order; a record without ``attempts`` and ``usage`` still gives every job with its stage and state.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import yaml

from sl_pipelines.core.resolve import split_job_name
from sl_pipelines.core.states import JobState

_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_ATTEMPT_NAME = re.compile(r"(.+)\.a(\d+)")
_PINNED = "the run's failure is pinned on this job"
_NOT_KNOWN = ("", JobState.UNKNOWN.value, JobState.NOT_FOUND.value)


@dataclass(frozen=True)
class Attempt:
    """One Slurm job of a run: one attempt of one of its jobs.

    Attributes:
        name: the job's name (``slp-<token>-<stage>-<key>``).
        key: the job's short name within its stage (``plane-2``).
        stage: the stage number (from 1; 0 when the name does not say).
        attempt: the attempt number (from 1).
        job_id: the Slurm job id ("" when not known).
        state: the Slurm state name, or "" when not known.
        reason: why the attempt ended as it did (from the attempt history), or "".
        submitted, started, ended: when, where known (UTC).
        usage: what the job used (the record's ``usage`` entry), empty when not recorded.
        requested: the attempt's resources as the attempt history gives them (``memory_gb``,
            ``time_limit_minutes``), empty when not recorded.
    """

    name: str
    key: str
    stage: int
    attempt: int
    job_id: str
    state: str
    reason: str = ""
    submitted: datetime | None = None
    started: datetime | None = None
    ended: datetime | None = None
    usage: Mapping[str, Any] = field(default_factory=dict)
    requested: Mapping[str, Any] = field(default_factory=dict)

    @property
    def outcome(self) -> str:
        """``ok``, ``failed``, ``cancelled``, ``active`` or ``unknown``: how the report colours it."""
        if not self.state:
            return "unknown"
        state = JobState.parse(self.state)
        if state is JobState.COMPLETED:
            return "ok"
        if state is JobState.CANCELLED:
            return "cancelled"
        if state.is_failure:
            return "failed"
        return "active" if state.is_active else "unknown"


@dataclass(frozen=True)
class RunView:
    """A run as its report shows it: the record's header facts, its stages and every attempt."""

    record: Mapping[str, Any]
    stage_names: tuple[str, ...]
    attempts: tuple[Attempt, ...]

    @property
    def token(self) -> str:
        return str(self.record.get("token", ""))

    @property
    def status(self) -> str:
        return str(self.record.get("status", "") or "UNKNOWN")

    def stage_label(self, number: int) -> str:
        """``2 · planes`` for a stage number."""
        if 0 < number <= len(self.stage_names):
            return f"{number} · {self.stage_names[number - 1]}"
        return str(number) if number else "?"

    def stages(self) -> tuple[int, ...]:
        """Every stage number to show: the definition's, and any a job names."""
        return tuple(sorted({*range(1, len(self.stage_names) + 1), *(a.stage for a in self.attempts)}))


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time (naive ones are UTC), or None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def stage_names(definition: str) -> tuple[str, ...]:
    """The stage names of a definition's YAML text (none when it is missing or unreadable)."""
    try:
        data = yaml.load(definition, Loader=_LOADER) if definition else None  # noqa: S506 - a safe loader
    except yaml.YAMLError:
        return ()
    stages = data.get("stages") if isinstance(data, dict) else None
    if not isinstance(stages, list):
        return ()
    return tuple(str(s.get("name", i)) if isinstance(s, dict) else str(i) for i, s in enumerate(stages, 1))


def view_run(
    record: Mapping[str, Any], states: Mapping[str, str] | None = None, failed_job: str = ""
) -> RunView:
    """Every attempt of every job of a run, in stage order.

    Args:
        record: the run record's data (``json.loads`` of the record); missing keys are tolerated.
        states: Slurm's state by job id where it was asked (the record may not hold them).
        failed_job: the job the run's failure is pinned on (default: the job the record's reason names).
            Its last attempt counts as failed whatever Slurm says: a job that reported an error may
            still run, or be cancelled, when the run ends.
    """
    job_ids = _mapping(record.get("job_ids"))
    history = _mapping(record.get("attempts"))
    usage = {str(k): _mapping(v) for k, v in _mapping(record.get("usage")).items()}
    names = {str(n) for n in job_ids} | {str(n) for n in history}
    names |= {job_of(str(u["name"]))[0] for u in usage.values() if u.get("name")}
    token = str(record.get("token", ""))
    reason = str(record.get("reason") or "")
    pinned = failed_job or max((n for n in names if n in reason), key=len, default="")
    found: list[Attempt] = []
    for name in sorted(names, key=lambda n: _natural(split_job_name(n, token))):
        stage, key = split_job_name(name, token)
        entries = [_mapping(e) for e in history.get(name) or () if isinstance(e, Mapping)]
        if not entries:
            entries = [{"job_id": job_ids.get(name, "")}]  # the one attempt job_ids implies
        for number, entry in enumerate(entries, 1):
            attempt = _attempt(record, name, key, stage, number, entry, usage, states or {})
            if name == pinned and number == len(entries) and attempt.outcome != "failed":
                attempt = replace(attempt, state=JobState.FAILED.value, reason=attempt.reason or _PINNED)
            found.append(attempt)
    covered = {a.job_id for a in found}
    for job_id, used in usage.items():  # an attempt the history does not list, known only by its usage
        if job_id not in covered and used.get("name"):
            name, number = job_of(str(used["name"]))
            stage, key = split_job_name(name, token)
            entry = {"attempt": used.get("attempt") or number, "job_id": job_id}
            found.append(_attempt(record, name, key, stage, 1, entry, usage, states or {}))
    found.sort(key=lambda a: (_natural((a.stage, a.key)), a.attempt))
    return RunView(record, stage_names(str(record.get("definition") or "")), tuple(found))


def _attempt(  # noqa: PLR0917 - one attempt's facts from the record's three sources
    record: Mapping[str, Any],
    name: str,
    key: str,
    stage: int,
    number: int,
    entry: Mapping[str, Any],
    usage: Mapping[str, Mapping[str, Any]],
    states: Mapping[str, str],
) -> Attempt:
    job_id = str(entry.get("job_id") or "")
    used = usage.get(job_id, {})
    state = _state(record, stage, entry, used, states.get(job_id, ""))
    requested = {k: entry[k] for k in ("memory_gb", "time_limit_minutes") if k in entry}
    return Attempt(
        name=name,
        key=key,
        stage=stage,
        attempt=int(entry.get("attempt") or used.get("attempt") or number),
        job_id=job_id,
        state=state,
        reason=str(entry.get("reason") or ""),
        submitted=parse_time(used.get("submitted_at") or entry.get("submitted_at")),
        started=parse_time(used.get("started_at")),
        ended=parse_time(used.get("ended_at")),
        usage=used,
        requested=requested,
    )


def _state(
    record: Mapping[str, Any], stage: int, entry: Mapping[str, Any], used: Mapping[str, Any], slurm: str
) -> str:
    """The attempt's state: recorded, else Slurm's, else what the run's progress implies."""
    for candidate in (entry.get("state"), used.get("state"), slurm):
        if isinstance(candidate, str) and candidate not in _NOT_KNOWN:
            return candidate
    if record.get("status") == "SUCCEEDED" or 0 < stage < int(record.get("stage") or 0):
        return JobState.COMPLETED.value  # a run moves past a stage only when all its jobs completed
    return ""


def job_of(slurm_name: str) -> tuple[str, int]:
    """The job and attempt a Slurm job name stands for: a retried job's attempt N (from 2) runs under
    ``<job name>.a<N>`` (a definition's job names hold no dot)."""
    match = _ATTEMPT_NAME.fullmatch(slurm_name)
    return (match[1], int(match[2])) if match else (slurm_name, 1)


def _mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _natural(parts: tuple[int, str]) -> tuple[int, Sequence[object]]:
    """Sorts ``plane-2`` before ``plane-10``."""
    stage, key = parts
    return stage, [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", key)]
