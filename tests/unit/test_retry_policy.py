"""Retries with escalation as tables: which states are retried, how resources grow, caps, exhaustion."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path, PurePosixPath

import pytest

from sl_pipelines.core.decisions import Action, Facts, Patience, RunSpec, RunState, decide
from sl_pipelines.core.definition import parse_definition
from sl_pipelines.core.job import Job, Resources
from sl_pipelines.core.retry import (
    Attempt,
    JobRetry,
    PartitionLimits,
    RetryPolicy,
    attempt_job,
    attempt_name,
    next_attempt,
    parse_partitions,
    within_partition,
)
from sl_pipelines.core.states import JobState, JobStatus
from sl_pipelines.core.tracker_state import TrackerFailure, TrackerState
from sl_pipelines.errors import PipelineDefinitionError

OOM, TIMEOUT, FAILED = JobState.OUT_OF_MEMORY, JobState.TIMEOUT, JobState.FAILED
NODE_FAIL, PREEMPTED, CANCELLED = JobState.NODE_FAIL, JobState.PREEMPTED, JobState.CANCELLED
TEMPLATE = Resources(cpus=2, memory_mb=1024, time_limit_minutes=10, partition="main")
TWO = RetryPolicy(retries=2)


def tried(*attempts: tuple[float, int]) -> tuple[Attempt, ...]:
    return tuple(Attempt(i, memory_gb=gb, time_limit_minutes=m) for i, (gb, m) in enumerate(attempts, 1))


POLICY_TABLE = [
    # (case, policy, history, state, retried?, next attempt, memory MB, minutes, reason contains)
    ("OOM doubles memory", TWO, (), OOM, True, 2, 2048, 10, "memory 1 → 2 GB"),
    ("TIMEOUT doubles time", TWO, (), TIMEOUT, True, 2, 1024, 20, "time limit 10 → 20 minutes"),
    ("NODE_FAIL: same resources", TWO, (), NODE_FAIL, True, 2, 1024, 10, "same resources"),
    ("PREEMPTED: same resources", TWO, (), PREEMPTED, True, 2, 1024, 10, "same resources"),
    ("plain FAILED: never by default", TWO, (), FAILED, False, 1, 0, 0, "FAILED is not retried"),
    ("CANCELLED: never by default", TWO, (), CANCELLED, False, 1, 0, 0, "CANCELLED is not retried"),
    ("FAILED when asked", replace(TWO, retry_on=frozenset({FAILED})), (), FAILED, True, 2, 1024, 10, "same"),
    ("second OOM doubles again", TWO, tried((1, 10), (2, 10)), OOM, True, 3, 4096, 10, "2 → 4 GB"),
    ("exhausted", TWO, tried((1, 10), (2, 10), (4, 10)), OOM, False, 3, 0, 0, "no retries left (3 of 3"),
    ("no retries", RetryPolicy(), (), OOM, False, 1, 0, 0, "no retries left (1 of 1"),
    ("factor 1.5", replace(TWO, memory_factor=1.5), (), OOM, True, 2, 1536, 10, "1 → 1.5 GB"),
    ("memory capped", replace(TWO, max_memory_gb=1.5), (), OOM, True, 2, 1536, 10, "1 → 1.5 GB"),
    ("at the memory cap", replace(TWO, max_memory_gb=1), (), OOM, False, 1, 0, 0, "cap of 1 GB"),
    ("time capped", replace(TWO, max_time_limit_minutes=15), (), TIMEOUT, True, 2, 1024, 15, "10 → 15"),
    ("at the time cap", replace(TWO, max_time_limit_minutes=10), (), TIMEOUT, False, 1, 0, 0, "cap of 10"),
    ("OOM keeps the grown time", TWO, tried((1, 10), (1, 20)), OOM, True, 3, 2048, 20, "1 → 2 GB"),
    ("partition memory", within_partition(TWO, PartitionLimits(1536)), (), OOM, True, 2, 1536, 10, "1.5 GB"),
    (
        "at the partition's memory",
        within_partition(TWO, PartitionLimits(1024)),
        (),
        OOM,
        False,
        1,
        0,
        0,
        "cap",
    ),
    (
        "partition time",
        within_partition(TWO, PartitionLimits(None, 15)),
        (),
        TIMEOUT,
        True,
        2,
        1024,
        15,
        "15",
    ),
    (
        "the lower cap wins",
        within_partition(replace(TWO, max_memory_gb=1.25), PartitionLimits(4096)),
        (),
        OOM,
        True,
        2,
        1280,
        10,
        "1 → 1.25 GB",
    ),
]

# `scontrol show partition -o` as the testbed's Slurm 22.05 prints it (shortened), and limits a site sets
PARTITION_LINES = [
    "PartitionName=main AllowGroups=ALL Default=YES QoS=N/A DefaultTime=NONE MaxNodes=UNLIMITED "
    "MaxTime=UNLIMITED MinNodes=0 Nodes=slnoacct-n1 State=UP TotalCPUs=64 DefMemPerNode=UNLIMITED "
    "MaxMemPerNode=UNLIMITED TRES=cpu=64,mem=64G,node=1,billing=64",
    "PartitionName=gpu Default=NO MaxTime=2-00:00:00 MaxMemPerNode=96000",
    "PartitionName=short Default=NO MaxTime=01:30:00 MaxMemPerNode=0",
    "PartitionName=tiny Default=NO MaxTime=90 MaxMemPerNode=512",
    "PartitionName=days Default=NO MaxTime=3-12 MaxMemPerNode=UNLIMITED",
]


def test_partition_limits_are_read_from_scontrol() -> None:
    partitions, default = parse_partitions(PARTITION_LINES)
    assert default == "main"
    assert partitions == {
        "main": PartitionLimits(None, None),
        "gpu": PartitionLimits(96000, 2 * 24 * 60),
        "short": PartitionLimits(None, 90),
        "tiny": PartitionLimits(512, 90),
        "days": PartitionLimits(None, 3 * 24 * 60 + 12 * 60),
    }
    assert parse_partitions(["slurm_load_partitions error: Unable to contact slurm controller"]) == ({}, None)


@pytest.mark.parametrize(
    ("case", "policy", "history", "state", "retry", "attempt", "memory", "minutes", "reason"),
    POLICY_TABLE,
    ids=[row[0] for row in POLICY_TABLE],
)
def test_next_attempt(
    case: str,
    policy: RetryPolicy,
    history: tuple[Attempt, ...],
    state: JobState,
    retry: bool,
    attempt: int,
    memory: int,
    minutes: int,
    reason: str,
) -> None:
    verdict = next_attempt(policy, TEMPLATE, history, state)
    assert (verdict.retry, verdict.attempt) == (retry, attempt)
    assert reason in verdict.reason
    if retry:
        assert verdict.resources == replace(TEMPLATE, memory_mb=memory, time_limit_minutes=minutes)
    else:
        assert verdict.resources is None


def test_an_attempt_has_its_own_name_folder_resources_and_number() -> None:
    job = Job(
        "slp-tok-2-plane-0", PurePosixPath("/w/sl_jobs/tok/plane-0"), (("sl-worker", "demo"),), TEMPLATE
    )
    second = attempt_job(job, Attempt(2, memory_gb=2, time_limit_minutes=10))
    assert second.name == attempt_name(job.name, 2) == "slp-tok-2-plane-0.a2"
    assert second.working_directory == job.working_directory / "attempt-2"
    assert second.resources == replace(TEMPLATE, memory_mb=2048)
    assert ("SL_ATTEMPT", "2") in second.exports
    assert "#SBATCH --mem=2048M" in second.render()
    assert attempt_job(job, Attempt(1, memory_gb=1, time_limit_minutes=10)) == job


def test_attempts_round_trip_through_the_run_record_and_tolerate_missing_keys() -> None:
    attempt = Attempt(2, "123", "OUT_OF_MEMORY", "killed", 2.0, 10, "2026-01-01T10:00:00+00:00")
    assert Attempt.from_dict(attempt.to_dict()) == attempt
    assert Attempt.from_dict({"attempt": 3}) == Attempt(3)


# --- decisions -------------------------------------------------------------------------------------------

ME = 11
SPEC = RunSpec(ME, "/t.yaml", {1: ("a", "b")}, retry={"a": JobRetry(TWO, TEMPLATE)})
NOW = 1000.0


def decide_with(
    found: Mapping[str, tuple[str, JobState]],
    failure: TrackerFailure | None = None,
    attempts: Mapping[str, tuple[Attempt, ...]] | None = None,
    since: Mapping[str, float] | None = None,
    done: tuple[str, ...] = (),
) -> tuple[Action, str, Mapping[str, tuple[Attempt, ...]]]:
    jobs = {name: JobStatus(job_id, name, s) for name, (job_id, s) in found.items()}
    ids = {name: job_id for name, (job_id, _) in found.items()}
    tracker = TrackerState(manager_id=ME, job_count=2, completed_jobs=done, failure=failure, started_at="t")
    state = RunState(stage=1, job_ids=ids, attempts=dict(attempts or {}), since=dict(since or {}))
    decision = decide(SPEC, state, Facts(jobs=jobs, tracker=tracker, now=NOW), Patience())
    return decision.action, decision.reason, decision.to_retry


def test_an_oom_job_is_retried_alone_with_doubled_memory() -> None:
    action, _, retry = decide_with({"a": ("7", OOM), "b": ("8", JobState.RUNNING)})
    assert action is Action.RETRY and list(retry) == ["a"]  # the running sibling is left alone
    first, second = retry["a"]
    assert (first.attempt, first.job_id, first.state) == (1, "7", "OUT_OF_MEMORY")
    assert (second.attempt, second.memory_gb, second.time_limit_minutes, second.job_id) == (2, 2.0, 10, "")


def test_a_job_that_reported_completion_is_never_run_again() -> None:
    action, reason, _ = decide_with({"a": ("7", OOM), "b": ("8", JobState.RUNNING)}, done=("a",))
    assert action is Action.FAIL and "attempt 1 of 3 (7), not retried: it reported completion" in reason


def test_a_job_without_a_policy_fails_the_run_as_before() -> None:
    action, reason, _ = decide_with({"a": ("7", JobState.COMPLETED), "b": ("8", OOM)})
    assert action is Action.FAIL and reason.startswith("Slurm reports") and "attempt" not in reason


def test_exit_1_is_not_retried_and_the_reason_says_so() -> None:
    action, reason, _ = decide_with({"a": ("7", FAILED)})
    assert action is Action.FAIL
    assert "attempt 1 of 3 (7), not retried: FAILED is not retried" in reason


def test_exhausted_attempts_fail_naming_the_last_attempt() -> None:
    history = (*tried((1, 10), (2, 10)), Attempt(3, job_id="9", memory_gb=4, time_limit_minutes=10))
    action, reason, _ = decide_with({"a": ("9", OOM)}, attempts={"a": history})
    assert action is Action.FAIL
    assert "attempt 3 of 3 (9), not retried: no retries left" in reason


def test_a_recorded_failure_waits_for_slurms_final_state_then_retries() -> None:
    failure = TrackerFailure("a", "WorkerInterrupted: SIGTERM", "t")
    action, reason, _ = decide_with({"a": ("7", JobState.COMPLETING)}, failure=failure)
    assert action is Action.WAIT and "final state of a" in reason
    action, _, retry = decide_with({"a": ("7", TIMEOUT)}, failure=failure)
    assert action is Action.RETRY and retry["a"][-1].time_limit_minutes == 20
    assert "SIGTERM" in retry["a"][0].reason


def test_a_preempted_job_that_recorded_its_sigterm_is_retried_only_once_slurm_did_not_requeue_it() -> None:
    failure = TrackerFailure("a", "WorkerInterrupted: SIGTERM", "t")
    running = {"a": ("7", PREEMPTED), "b": ("8", JobState.RUNNING)}
    action, _, _ = decide_with(running, failure=failure)
    assert action is Action.WAIT
    action, _, retry = decide_with(running, failure=failure, since={"settle:a": 0.0})
    assert action is Action.RETRY and retry["a"][0].state == "PREEMPTED"


def test_a_recorded_failure_with_no_final_state_in_time_fails_the_run() -> None:
    failure = TrackerFailure("a", "boom", "t")
    action, _, _ = decide_with({"a": ("7", JobState.NOT_FOUND)}, failure=failure, since={"final:a": 0.0})
    assert action is Action.FAIL


def test_a_siblings_recorded_failure_is_never_retried_away() -> None:
    failure = TrackerFailure("b", "exit 1", "t")
    action, reason, _ = decide_with({"a": ("7", OOM), "b": ("8", FAILED)}, failure=failure)
    assert action is Action.FAIL and "Job b reported an error" in reason


def test_preemption_is_retried_once_the_settling_time_passed() -> None:
    action, _, _ = decide_with({"a": ("7", PREEMPTED), "b": ("8", JobState.RUNNING)})
    assert action is Action.WAIT  # Slurm may still requeue it
    action, _, retry = decide_with(
        {"a": ("7", PREEMPTED), "b": ("8", JobState.RUNNING)}, since={"settle:a": 0.0}
    )
    assert action is Action.RETRY and retry["a"][-1].memory_gb == 1


# --- the definition --------------------------------------------------------------------------------------


def definition(job: dict[str, object], defaults: dict[str, object] | None = None) -> dict[str, object]:
    return {
        "pipeline": "behavior",
        "defaults": defaults or {},
        "stages": [{"name": "s", "jobs": [{"name": "j", "command": "true", **job}]}],
    }


def test_a_job_takes_the_pipelines_retry_defaults_and_overrides_them() -> None:
    parsed = parse_definition(
        definition({"retries": 3, "max_memory_gb": 8}, {"retries": 1, "time_factor": 3})
    )
    policy = parsed.stages[0].jobs[0].retry
    assert (policy.retries, policy.time_factor, policy.memory_factor, policy.max_memory_gb) == (3, 3, 2, 8)
    assert policy.retry_on == frozenset({OOM, TIMEOUT, NODE_FAIL, PREEMPTED})
    listed = parse_definition(definition({"retries": 1, "retry_on": ["FAILED", "OOM"]}))
    assert listed.stages[0].jobs[0].retry.retry_on == frozenset({FAILED, OOM})
    assert parse_definition(definition({})).stages[0].jobs[0].retry == RetryPolicy()


@pytest.mark.parametrize(
    ("job", "key", "problem"),
    [
        ({"retries": -1}, "stages[0].jobs[0].retries", "expected a whole number of 0 or more"),
        ({"retries": "2"}, "stages[0].jobs[0].retries", "expected a whole number of 0 or more"),
        ({"retry_on": ["COMPLETED"]}, "stages[0].jobs[0].retry_on", "is not a state that can be retried"),
        ({"retry_on": "OOM"}, "stages[0].jobs[0].retry_on", "expected a non-empty list"),
        ({"memory_factor": 0.5}, "stages[0].jobs[0].memory_factor", "expected a factor of 1 or more"),
        ({"max_memory_gb": 0}, "stages[0].jobs[0].max_memory_gb", "expected a positive float"),
        ({"max_time_limit_minutes": 1.5}, "stages[0].jobs[0].max_time_limit_minutes", "whole number"),
        ({"retry": 2}, "stages[0].jobs[0].retry", "unknown key"),
    ],
)
def test_bad_retry_settings_are_refused_naming_file_and_key(
    job: dict[str, object], key: str, problem: str
) -> None:
    source = Path("/configs/behavior.yaml")
    with pytest.raises(PipelineDefinitionError) as raised:
        parse_definition(definition(job), source=source)
    message = str(raised.value)
    assert message.startswith(f"{source}: {key}: ") and problem in message
    assert message.count(". ") == 0 and message.endswith("try again.")
