"""A thousand pipelines' polling cycle on the real testbed: everything it asks travels in ONE command.

A thousand behavior pipelines in flight ask about 7,000 jobs and 1,000 trackers per cycle. Here 200 real
jobs stand among them: 100 known by id and 100 known only by name (a manager adopting a stage after a
crash), plus 6,800 names nobody submitted; 100 of the 1,000 trackers exist. A request that size broke
the command line's limits before it travelled on standard input.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import PurePosixPath

import pytest
from conftest import Testbed

from sl_pipelines.adapters.server import Server
from sl_pipelines.core.job import Job, Resources
from sl_pipelines.core.seams import ProbeRequest
from sl_pipelines.core.states import JobState

PIPELINES, JOBS_PER_PIPELINE, REAL_JOBS, TRACKERS_WRITTEN = 1000, 7, 200, 100


def test_a_thousand_pipelines_probe_answers_in_one_command(
    slurm_server: Server, remote_scratch: Callable[[Server], PurePosixPath]
) -> None:
    folder, token = remote_scratch(slurm_server), uuid.uuid4().hex[:10]
    names = [f"slp-{token}-{i:04d}" for i in range(PIPELINES * JOBS_PER_PIPELINE)]
    jobs = [
        Job(
            name=name,
            working_directory=folder / name,
            commands=(("true",),),
            resources=Resources(memory_mb=50),
        )
        for name in names[:REAL_JOBS]
    ]
    report = slurm_server.submit_jobs(jobs)
    assert sorted(report.submitted) == sorted(job.name for job in jobs), report
    trackers = [folder / "sessions" / f"s{i:04d}" / "tracker.yaml" for i in range(PIPELINES)]
    texts = {path: f"# tracker {i}\n@@SLP@@ end 0\nstatus: running\n" for i, path in enumerate(trackers)}
    script = "".join(
        f"mkdir -p '{p.parent}' && printf '%s' '{texts[p]}' > '{p}' && " for p in trackers[:TRACKERS_WRITTEN]
    )
    slurm_server.run(script + "true", check=True)
    by_id = [report.submitted[name] for name in names[: REAL_JOBS // 2]]
    by_name = names[REAL_JOBS // 2 :]  # 100 real jobs, then 6,800 names nobody submitted
    slurm_server.connect()  # detects the accounting mode: once per connection, before the cycles

    before = slurm_server.round_trips
    result = slurm_server.probe(
        ProbeRequest(job_names=tuple(by_name), job_ids=tuple(by_id), tracker_paths=tuple(trackers))
    )

    assert slurm_server.round_trips == before + 1
    assert result.slurm_answered, result.slurm_problems
    # every real job, found by id or by name, and no other
    assert {s.job_id: s.name for s in result.jobs} == {
        job_id: name for name, job_id in report.submitted.items()
    }
    assert all(s.state not in (JobState.NOT_FOUND, JobState.UNKNOWN) for s in result.jobs)
    assert result.trackers == {
        path: texts[path] if i < TRACKERS_WRITTEN else None for i, path in enumerate(trackers)
    }
    assert not result.unreadable


@pytest.mark.parametrize("cluster", ["acct", "noacct"])
def test_a_job_of_another_account_asked_for_by_id_is_still_found(
    cluster: str, testbed: Testbed, make_server: Callable[..., Server]
) -> None:
    """The id query is narrowed to the SSH user (so other people's queue does not slow it down); a job
    that another account submitted (a run taken over from a colleague's login) is not lost by that:
    the accounting step (sacct, or scontrol without accounting) still answers for it. With sacct that
    answer can lag the submission by a second: "not found" meanwhile, which the manager waits out."""
    server = make_server(cluster)
    env = dict(os.environ, SLURM_CONF=str(testbed.cluster(cluster).slurm_conf))
    submitted = subprocess.run(
        [
            "sbatch",
            "--hold",
            "--parsable",
            "-J",
            "sl-other-account",
            "-o",
            "/dev/null",
            "--mem=10M",
            "-t",
            "1",
            "--wrap=true",
        ],
        env=env,
        user="sltest3",
        extra_groups=[],
        cwd="/tmp",
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    job_id = submitted.stdout.strip().split(";")[0]
    try:
        server.connect()
        request = ProbeRequest(job_names=(), job_ids=(job_id,), tracker_paths=())
        deadline = time.monotonic() + 30  # slurmdbd records a new job within a second or so
        while True:
            result = server.probe(request)
            assert result.slurm_answered, result.slurm_problems
            found = [(s.job_id, s.state) for s in result.jobs]
            if found != [(job_id, JobState.NOT_FOUND)] or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert found == [(job_id, JobState.PENDING)]
    finally:
        subprocess.run(["scancel", job_id], env=env, check=False, timeout=60)
