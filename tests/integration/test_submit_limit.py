"""A real submit limit: the accounting cluster enforces association limits (``AccountingStorageEnforce``),
and this test lowers its user's ``MaxSubmitJobs`` to 3 while a 7-job behavior stage goes out.

Slurm refuses the submissions past the limit ("Job violates accounting/QOS policy (job submit limit,
...)"); the manager holds those jobs back, sends them one at a time as room frees, and the run finishes
with each job in Slurm's records exactly once. The limit is removed afterwards (and by every
``testbed.sh start``, should this test be killed).
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Testbed
from pipeline_helpers import configs_with, generate, jobs_in_slurm, tracker_of

from sl_pipelines.adapters.server import Server
from sl_pipelines.orchestration.manager import PipelineManager
from sl_pipelines.orchestration.pipeline import ProcessingPipeline
from sl_pipelines.vocabulary import ProcessingStatus

LIMIT = 3


def _slurm(testbed: Testbed, *command: str) -> str:
    cluster = testbed.cluster("acct")
    done = subprocess.run(
        list(command),
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SLURM_CONF": str(cluster.slurm_conf)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout + done.stderr


def _set_limit(testbed: Testbed, value: int) -> None:
    user = testbed.cluster("acct").user
    _slurm(testbed, "sacctmgr", "-i", "modify", "user", "where", f"name={user}", "cluster=slacct",
           "set", f"MaxSubmitJobs={value}")  # fmt: skip
    wanted = str(value) if value >= 0 else ""  # scontrol shows "MaxSubmitJobs=3(0)", or nothing when unset
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # slurmdbd pushes the change to slurmctld
        records = _slurm(testbed, "scontrol", "show", "assoc_mgr", "flags=assoc", f"users={user}")
        own = records[records.find(f"UserName={user}(") :]
        shown = re.search(r"MaxSubmitJobs=(\S*)", own) if f"UserName={user}(" in records else None
        if shown and shown.group(1).split("(")[0] == wanted:
            return
        time.sleep(0.2)
    pytest.fail(f"slurmctld did not apply MaxSubmitJobs={value} for {user}: {records[-800:]}")


@pytest.fixture
def submit_limit(testbed: Testbed) -> Iterator[int]:
    if "acct" not in testbed.clusters:
        pytest.skip("the testbed runs without accounting")
    _set_limit(testbed, LIMIT)
    try:
        yield LIMIT
    finally:
        _set_limit(testbed, -1)


def test_a_submit_limit_holds_jobs_back_and_the_run_still_finishes(
    testbed: Testbed, make_server: Callable[..., Server], project: str, tmp_path: Path, submit_limit: int
) -> None:
    server = make_server("acct")
    spec = generate(server, project, "s1")
    jobs = ("runtime", "face_camera", "left_camera", "right_camera", "actor_microcontroller")
    configs = configs_with(tmp_path, "behavior", dict.fromkeys(jobs, "--seconds 3"))
    pipeline = ProcessingPipeline.create("behavior", [spec], server, configs_dir=configs)
    manager = PipelineManager(server, [pipeline], poll_interval=0.5, max_interval=1.0)
    held_back, most_in_slurm = False, 0
    deadline = time.monotonic() + 180
    while not manager.finished:
        assert time.monotonic() < deadline, pipeline.describe()
        manager.cycle()
        held_back = held_back or pipeline.state.limited
        queued = server.run("squeue --me -h -r -o %i", check=True).stdout.split()
        most_in_slurm = max(most_in_slurm, len(queued))
        time.sleep(0.5)
    assert pipeline.status is ProcessingStatus.SUCCEEDED, pipeline.describe()
    assert held_back, "Slurm's submit limit was never met: the test proves nothing"
    assert most_in_slurm <= submit_limit
    names = sorted(job.name for job in pipeline.resolved.stages[1])
    assert sorted(jobs_in_slurm(server, pipeline.resolved, (1,))) == names  # each job exactly once
    state = tracker_of(server, pipeline)
    assert state.is_complete and sorted(state.completed_jobs) == names
