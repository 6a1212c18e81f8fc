"""Retries with escalation on the real testbed: Slurm really kills jobs (cgroup memory, time limit)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Testbed
from pipeline_helpers import generate, run_to_end, tracker_of

from sl_pipelines.adapters.profiles import ServerProfile, save_profile
from sl_pipelines.adapters.server import Server
from sl_pipelines.cli import process
from sl_pipelines.cli.render import pipeline_json
from sl_pipelines.core.retry import PartitionLimits
from sl_pipelines.orchestration.pipeline import ProcessingPipeline
from sl_pipelines.vocabulary import ProcessingStatus

pytestmark = pytest.mark.usefixtures("private_data_dir")

needs_memory_limits = pytest.mark.skipif(
    not Path("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists(),
    reason="no cgroup v1 memory controller: the testbed's Slurm cannot enforce memory (task/cgroup)",
)

DEMO = "sl-worker demo {tracked} {session_args} --pipeline behavior --inputs 'behavior_data/runtime*'"


def configs(tmp_path: Path, strained: dict[str, Any], extra: str) -> Path:
    """A one-stage pipeline: a sibling that finishes at once, and a strained job with a retry policy."""
    folder = tmp_path / "configs"
    folder.mkdir(exist_ok=True)
    definition = {
        "pipeline": "behavior",
        "defaults": {"cpus": 1, "memory_gb": 0.25, "time_limit_minutes": 5, "retries": 2},
        "stages": [
            {
                "name": "process",
                "jobs": [
                    {"name": "sibling", "command": f"{DEMO} --part sibling"},
                    {"name": "strained", "command": f"{DEMO} --part strained {extra}", **strained},
                ],
            }
        ],
    }
    (folder / "behavior.yaml").write_text(yaml.safe_dump(definition))
    return folder


def start(
    server: Server, project: str, tmp_path: Path, strained: dict[str, Any], extra: str
) -> ProcessingPipeline:
    spec = generate(server, project, "s1")
    folder = configs(tmp_path, strained, extra)
    return ProcessingPipeline.create("behavior", [spec], server, configs_dir=folder, keep_job_logs=True)


def attempts_of(pipeline: ProcessingPipeline, server: Server) -> list[dict[str, Any]]:
    """The strained job's attempts as the run's record on the server has them (the journal agrees)."""
    name = pipeline.resolved.stages[1][1].name
    record = json.loads(server.read_text(pipeline.resolved.jobs_folder / "run.json") or "{}")
    assert record["attempts"] == pipeline.journal.attempts
    (sibling,) = record["attempts"][pipeline.resolved.stages[1][0].name]  # it may be retried, but ran once
    assert (sibling["attempt"], sibling["state"]) == (1, "COMPLETED")
    return list(record["attempts"][name])


@needs_memory_limits
def test_an_oom_job_is_retried_alone_with_doubled_memory_and_the_pipeline_succeeds(
    slurm_server: Server, project: str, tmp_path: Path
) -> None:
    # 150 MB held by a Python worker (~35 MB of its own) cannot fit 128 MB, and fits 256 MB.
    pipeline = start(slurm_server, project, tmp_path, {"memory_gb": 0.125}, "--allocate-mb 150 --seconds 1")
    run_to_end(slurm_server, [pipeline], timeout=60)
    assert pipeline.status is ProcessingStatus.SUCCEEDED, pipeline.describe()
    first, second = attempts_of(pipeline, slurm_server)
    assert (first["attempt"], first["state"], first["memory_gb"]) == (1, "OUT_OF_MEMORY", 0.125)
    assert (second["attempt"], second["state"], second["memory_gb"]) == (2, "COMPLETED", 0.25)
    assert first["job_id"] and second["job_id"] and first["job_id"] != second["job_id"]
    assert second["job_id"] == pipeline.journal.job_ids[pipeline.resolved.stages[1][1].name]
    state = tracker_of(slurm_server, pipeline)
    assert state.is_complete and [(r.job, r.attempt) for r in state.retries] == [
        (pipeline.resolved.stages[1][1].name, 2)
    ]
    assert pipeline_json(pipeline)["attempts"] == pipeline.journal.attempts  # what --json prints
    sibling = pipeline.journal.job_ids[pipeline.resolved.stages[1][0].name]
    sacct_or_scontrol = slurm_server.status([sibling])
    assert sacct_or_scontrol[sibling].state.value == "COMPLETED", "the finished sibling ran once"


@needs_memory_limits
def test_the_summary_shows_every_attempt_with_its_state_and_resources(
    make_profile: Callable[..., ServerProfile],
    make_server: Callable[..., Server],
    project: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    save_profile(make_profile("noacct", name="retries"))
    spec = generate(make_server("noacct"), project, "s1")
    folder = configs(tmp_path, {"memory_gb": 0.125}, "--allocate-mb 150")
    argv = ["behavior", spec, "--server", "retries", "--configs", str(folder), "--poll-interval", "0.5"]
    assert process.main(argv) == 0
    captured = capsys.readouterr()
    out = " ".join((captured.out + captured.err).split())  # the table, then the details (as failures)
    assert f"behavior {spec}: retries" in out
    assert "strained: attempt 1 OUT_OF_MEMORY (0.125 GB, 5 min, job " in out
    assert "→ attempt 2 COMPLETED (0.25 GB, 5 min, job " in out


@needs_memory_limits
def test_exhausted_attempts_fail_the_pipeline_naming_the_last_attempt(
    make_server: Callable[..., Server], project: str, tmp_path: Path
) -> None:
    server = make_server("acct")
    strained = {"memory_gb": 0.125, "retries": 1}
    pipeline = start(server, project, tmp_path, strained, "--allocate-mb 400 --seconds 1")
    run_to_end(server, [pipeline], timeout=60)
    assert pipeline.status is ProcessingStatus.FAILED
    first, second = attempts_of(pipeline, server)
    assert [first["state"], second["state"]] == ["OUT_OF_MEMORY", "OUT_OF_MEMORY"]
    assert second["memory_gb"] == 0.25
    assert pipeline.failure is not None
    assert f"attempt 2 of 2 ({second['job_id']}), not retried: no retries left" in pipeline.failure.reason
    assert pipeline.failure.job == pipeline.resolved.stages[1][1].name
    assert str(pipeline.failure.stderr_path).endswith("/strained/attempt-2/stderr.txt")  # the last attempt
    assert "oom-kill" in pipeline.failure.stderr_tail


def test_a_job_exiting_1_is_not_retried(
    make_server: Callable[..., Server], project: str, tmp_path: Path
) -> None:
    server = make_server("noacct")
    pipeline = start(server, project, tmp_path, {}, "--fail 'bad input'")
    run_to_end(server, [pipeline], timeout=60)
    assert pipeline.status is ProcessingStatus.FAILED
    assert pipeline.failure is not None and pipeline.failure.job == pipeline.resolved.stages[1][1].name
    assert "bad input" in pipeline.failure.reason
    assert "not retried: FAILED is not retried" in pipeline.failure.reason
    (only,) = attempts_of(pipeline, server)
    assert (only["attempt"], only["state"]) == (1, "FAILED")
    assert tracker_of(server, pipeline).retries == ()


@pytest.mark.slow
def test_a_timeout_job_is_retried_with_doubled_time_and_the_pipeline_succeeds(
    make_server: Callable[..., Server], project: str, tmp_path: Path
) -> None:
    # Slurm's shortest limit is 1 minute and it checks limits periodically: attempt 1 takes 60-90 s.
    server = make_server("acct")
    strained = {"time_limit_minutes": 1}
    pipeline = start(server, project, tmp_path, strained, "--seconds 300 --until-attempt 1")
    run_to_end(server, [pipeline], timeout=150)
    assert pipeline.status is ProcessingStatus.SUCCEEDED, pipeline.describe()
    first, second = attempts_of(pipeline, server)
    assert (first["state"], first["time_limit_minutes"]) == ("TIMEOUT", 1)
    assert (second["state"], second["time_limit_minutes"]) == ("COMPLETED", 2)
    assert "WorkerInterrupted" in first["reason"], "the job recorded its SIGTERM; the retry cleared it"
    (retry,) = tracker_of(server, pipeline).retries
    assert "SIGTERM" in retry.reason


def _partition(testbed: Testbed, cluster: str, limits: str) -> None:
    """``scontrol update`` of the cluster's only partition (``main``), as the testbed's root."""
    conf = testbed.cluster(cluster).slurm_conf
    done = subprocess.run(
        ["scontrol", "update", "PartitionName=main", *limits.split()],
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SLURM_CONF": str(conf)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@needs_memory_limits
def test_a_retry_never_asks_for_more_than_the_partition_allows(
    testbed: Testbed, make_server: Callable[..., Server], project: str, tmp_path: Path
) -> None:
    """MaxMemPerNode=256 MB: attempt 2 gets 0.25 GB (capped there), and no attempt 3 of 0.5 GB is made
    (sbatch would refuse it, or it would wait for ever); the run fails naming the cap."""
    _partition(testbed, "noacct", "MaxMemPerNode=256 MaxTime=90")
    try:
        server = make_server("noacct")  # reads the partition's limits with the cluster's
        assert server.partition_limits(None) == PartitionLimits(max_memory_mb=256, max_time_limit_minutes=90)
        assert server.partition_limits("main") == server.partition_limits(None)
        pipeline = start(server, project, tmp_path, {"memory_gb": 0.125}, "--allocate-mb 400 --seconds 1")
        run_to_end(server, [pipeline], timeout=60)
    finally:
        _partition(testbed, "noacct", "MaxMemPerNode=0 MaxTime=UNLIMITED")  # 0: unlimited again
    assert pipeline.status is ProcessingStatus.FAILED
    first, second = attempts_of(pipeline, server)
    assert [first["memory_gb"], second["memory_gb"]] == [0.125, 0.25]
    assert [first["state"], second["state"]] == ["OUT_OF_MEMORY", "OUT_OF_MEMORY"]
    assert pipeline.failure is not None
    assert "not retried: memory is already at the cap of 0.25 GB" in pipeline.failure.reason
