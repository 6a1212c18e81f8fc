"""Retries with escalation: whether a failed job runs again, and with which resources (pure).

A job's :class:`RetryPolicy` comes from the pipeline definition (per job, or the pipeline's
``defaults:``). When Slurm ends one of the job's attempts in a state the policy lists (by default
OUT_OF_MEMORY, TIMEOUT, NODE_FAIL and PREEMPTED; never a plain FAILED unless asked), :func:`next_attempt`
says whether an attempt is left and what it asks for: memory times ``memory_factor`` after
OUT_OF_MEMORY, time times ``time_factor`` after TIMEOUT, the same resources otherwise, each capped by
the policy's caps. A retry that could not ask for more than the attempt that ran out of it is refused:
it would fail the same way.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sl_pipelines.core.job import Job, Resources
from sl_pipelines.core.states import JobState

DEFAULT_RETRY_ON = frozenset(
    {JobState.OUT_OF_MEMORY, JobState.TIMEOUT, JobState.NODE_FAIL, JobState.PREEMPTED}
)
"""The states retried when a policy names none: resource and infrastructure failures, not bugs."""

RETRYABLE_STATES = frozenset(
    {*DEFAULT_RETRY_ON, JobState.FAILED, JobState.CANCELLED, JobState.BOOT_FAIL, JobState.DEADLINE}
)
"""The states a policy may list in ``retry_on``."""


@dataclass(frozen=True)
class RetryPolicy:
    """How one job is retried.

    Attributes:
        retries: how many times the job may run again after its first attempt (0: never).
        retry_on: the Slurm states that are retried.
        memory_factor: memory of the next attempt after OUT_OF_MEMORY, as a multiple of the last one.
        time_factor: time limit of the next attempt after TIMEOUT, as a multiple of the last one.
        max_memory_gb: the most memory an attempt may ask for (None: no cap of its own).
        max_time_limit_minutes: the longest time limit an attempt may ask for (None: no cap of its own).
    """

    retries: int = 0
    retry_on: frozenset[JobState] = DEFAULT_RETRY_ON
    memory_factor: float = 2.0
    time_factor: float = 2.0
    max_memory_gb: float | None = None
    max_time_limit_minutes: int | None = None

    @property
    def attempts(self) -> int:
        """How many attempts the job may have in all."""
        return self.retries + 1


@dataclass(frozen=True)
class PartitionLimits:
    """What one attempt may ask of its partition (``scontrol show partition``); None: no limit.

    Attributes:
        max_memory_mb: the partition's ``MaxMemPerNode`` in MiB.
        max_time_limit_minutes: the partition's ``MaxTime`` in minutes.
    """

    max_memory_mb: int | None = None
    max_time_limit_minutes: int | None = None


def within_partition(policy: RetryPolicy, limits: PartitionLimits) -> RetryPolicy:
    """The policy with its caps lowered to the partition's limits (a retry beyond them would be refused by
    sbatch, or wait in the queue for ever)."""
    memory_gb = policy.max_memory_gb
    if limits.max_memory_mb is not None:
        partition_gb = limits.max_memory_mb / 1024
        memory_gb = partition_gb if memory_gb is None else min(memory_gb, partition_gb)
    minutes = policy.max_time_limit_minutes
    if limits.max_time_limit_minutes is not None:
        partition_minutes = limits.max_time_limit_minutes
        minutes = partition_minutes if minutes is None else min(minutes, partition_minutes)
    return replace(policy, max_memory_gb=memory_gb, max_time_limit_minutes=minutes)


def parse_partitions(lines: Sequence[str]) -> tuple[dict[str, PartitionLimits], str | None]:
    """``scontrol show partition -o`` → each partition's limits, and the default partition's name."""
    partitions: dict[str, PartitionLimits] = {}
    default = None
    for line in lines:
        fields = dict(item.partition("=")[::2] for item in line.split() if "=" in item)
        name = fields.get("PartitionName")
        if not name:
            continue
        partitions[name] = PartitionLimits(
            _limit_mb(fields.get("MaxMemPerNode", "")), _minutes(fields.get("MaxTime", ""))
        )
        if fields.get("Default") == "YES":
            default = name
    return partitions, default


def _limit_mb(text: str) -> int | None:
    return int(text) if text.isdigit() and int(text) > 0 else None  # UNLIMITED, 0: no limit


def _minutes(text: str) -> int | None:
    """Slurm's ``MaxTime`` in minutes: ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``; None for
    ``UNLIMITED``/``INFINITE``."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not match:
        return None
    days, first, second, third = (int(g) if g else None for g in match.groups())
    assert first is not None
    if days is not None:  # D-HH[:MM[:SS]]
        seconds = days * 86400 + first * 3600 + (second or 0) * 60 + (third or 0)
    elif third is not None:  # HH:MM:SS
        seconds = first * 3600 + (second or 0) * 60 + third
    else:  # MM or MM:SS
        seconds = first * 60 + (second or 0)
    return max(1, seconds // 60)


@dataclass(frozen=True)
class Attempt:
    """One attempt of a job, as the run's journal and record keep it (``attempts`` in run.json).

    Attributes:
        attempt: 1-based.
        job_id: Slurm's id ("" until known).
        state: Slurm's final state ("" while it runs).
        reason: why it ended (Slurm's reason, or the tracker's failure).
        memory_gb: the memory it asked for.
        time_limit_minutes: the time limit it asked for.
        submitted_at: when its submission was started (ISO 8601 UTC).
    """

    attempt: int
    job_id: str = ""
    state: str = ""
    reason: str = ""
    memory_gb: float = 0.0
    time_limit_minutes: int = 0
    submitted_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The attempt as the run record's JSON holds it."""
        return {
            "attempt": self.attempt,
            "job_id": self.job_id,
            "state": self.state,
            "reason": self.reason,
            "memory_gb": self.memory_gb,
            "time_limit_minutes": self.time_limit_minutes,
            "submitted_at": self.submitted_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Attempt:
        """Reads an attempt from a run record, tolerating missing keys."""
        return cls(
            attempt=int(data.get("attempt", 1)),
            job_id=str(data.get("job_id", "")),
            state=str(data.get("state", "")),
            reason=str(data.get("reason", "")),
            memory_gb=float(data.get("memory_gb", 0.0)),
            time_limit_minutes=int(data.get("time_limit_minutes", 0)),
            submitted_at=str(data.get("submitted_at", "")),
        )

    def resources(self, template: Resources) -> Resources:
        """The template's resources with this attempt's memory and time limit."""
        return replace(
            template,
            memory_mb=round(self.memory_gb * 1024) or template.memory_mb,
            time_limit_minutes=self.time_limit_minutes or template.time_limit_minutes,
        )


def first_attempt(resources: Resources, submitted_at: str) -> Attempt:
    """Attempt 1 of a job, asking for the template's resources."""
    return Attempt(
        1,
        memory_gb=resources.memory_mb / 1024,
        time_limit_minutes=resources.time_limit_minutes,
        submitted_at=submitted_at,
    )


@dataclass(frozen=True)
class RetryVerdict:
    """What happens after one of a job's attempts failed.

    Attributes:
        retry: True when the job runs again.
        attempt: the number of the next attempt (retry), or of the attempt that failed (give up).
        resources: what the next attempt asks for (retry only).
        reason: why the job is retried, or why it is not (one clause, for messages).
    """

    retry: bool
    attempt: int
    resources: Resources | None = None
    reason: str = ""


def next_attempt(
    policy: RetryPolicy, template: Resources, history: Sequence[Attempt], state: JobState
) -> RetryVerdict:
    """Decides whether a job whose latest attempt ended in ``state`` runs again, and with what.

    Args:
        policy: the job's retry policy.
        template: the resources the job's definition asks for (attempt 1).
        history: the job's attempts so far, in order (empty: only attempt 1 ran).
        state: the final Slurm state of the latest attempt.
    """
    number = history[-1].attempt if history else 1
    if state not in policy.retry_on:
        return RetryVerdict(False, number, reason=f"{state.value} is not retried")
    if number >= policy.attempts:
        return RetryVerdict(False, number, reason=f"no retries left ({number} of {policy.attempts} attempts)")
    last = history[-1].resources(template) if history else template
    resources = _escalate(policy, last, state)
    if state is JobState.OUT_OF_MEMORY and resources.memory_mb <= last.memory_mb:
        reason = f"memory is already at the cap of {_gb(resources.memory_mb)} GB"
        return RetryVerdict(False, number, reason=reason)
    if state is JobState.TIMEOUT and resources.time_limit_minutes <= last.time_limit_minutes:
        reason = f"the time limit is already at the cap of {resources.time_limit_minutes} minutes"
        return RetryVerdict(False, number, reason=reason)
    return RetryVerdict(True, number + 1, resources, _growth(state, last, resources))


def _escalate(policy: RetryPolicy, last: Resources, state: JobState) -> Resources:
    memory, minutes = last.memory_mb, last.time_limit_minutes
    if state is JobState.OUT_OF_MEMORY:
        memory = math.ceil(memory * policy.memory_factor)
        if policy.max_memory_gb is not None:
            memory = min(memory, max(last.memory_mb, round(policy.max_memory_gb * 1024)))
    if state is JobState.TIMEOUT:
        minutes = math.ceil(minutes * policy.time_factor)
        if policy.max_time_limit_minutes is not None:
            minutes = min(minutes, max(last.time_limit_minutes, policy.max_time_limit_minutes))
    return replace(last, memory_mb=memory, time_limit_minutes=minutes)


def _growth(state: JobState, last: Resources, new: Resources) -> str:
    if state is JobState.OUT_OF_MEMORY:
        return f"{state.value}: memory {_gb(last.memory_mb)} → {_gb(new.memory_mb)} GB"
    if state is JobState.TIMEOUT:
        return f"{state.value}: time limit {last.time_limit_minutes} → {new.time_limit_minutes} minutes"
    return f"{state.value}: same resources"


def _gb(memory_mb: int) -> str:
    return f"{memory_mb / 1024:g}"


@dataclass(frozen=True)
class JobRetry:
    """What the run's decision needs to retry one job: its policy and the resources of its first attempt."""

    policy: RetryPolicy
    template: Resources


ATTEMPT_VARIABLE = "SL_ATTEMPT"
"""The environment variable that tells a retried job its attempt number (2, 3, …; unset on attempt 1)."""


def attempt_name(name: str, attempt: int) -> str:
    """The Slurm job name of an attempt: the job's own name, then ``.a<N>`` from the second attempt on.

    Job names in a definition hold no dot, so an attempt's name never equals another job's.
    """
    return name if attempt <= 1 else f"{name}.a{attempt}"


def attempt_job(job: Job, attempt: Attempt) -> Job:
    """The job as attempt ``attempt`` runs it: its own Slurm name, folder and resources (attempt 1: as is).

    Its tracker identity (the ``{job}`` of its command) stays the job's name, so it completes once.
    """
    if attempt.attempt <= 1:
        return replace(job, resources=attempt.resources(job.resources))
    return replace(
        job,
        name=attempt_name(job.name, attempt.attempt),
        working_directory=job.working_directory / f"attempt-{attempt.attempt}",
        resources=attempt.resources(job.resources),
        exports=(*job.exports, (ATTEMPT_VARIABLE, str(attempt.attempt))),
    )
