"""Helpers for pipeline tests on the testbed: demo sessions made on the server, edited configs, runs.

Import them with ``from pipeline_helpers import ...`` (this folder has no ``__init__.py``). The fixtures
``private_data_dir`` and ``project`` live in ``conftest.py``.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from sl_pipelines.adapters.server import Server
from sl_pipelines.core.arrays import array_name
from sl_pipelines.core.resolve import JOB_PREFIX, ResolvedPipeline
from sl_pipelines.core.seams import ProbeRequest
from sl_pipelines.core.tracker_state import TrackerState
from sl_pipelines.core.tracker_text import parse_tracker_text
from sl_pipelines.orchestration.manager import PipelineManager
from sl_pipelines.orchestration.pipeline import ProcessingPipeline, default_configs_dir

SL_PROCESS = [sys.executable, "-c", "from sl_pipelines.cli.process import main; raise SystemExit(main())"]
"""``sl-process`` as a command, run with this test's environment (its private data folder)."""


def generate(server: Server, project: str, session: str, *, planes: int = 2, animal: str = "A1") -> str:
    """Generates a demo session ON THE SERVER with its own sl-worker; returns project/animal/session."""
    env = server.environment.value
    command = (
        f"source {shlex.quote(env)}/bin/activate && sl-worker generate -q"
        f" --storage-root {shlex.quote(str(server.storage_root))} --project {shlex.quote(project)}"
        f" --animal {shlex.quote(animal)} --session {shlex.quote(session)} --planes {planes} --size-kb 16"
    )
    result = server.run(command, check=True)
    assert result.ok, result.stderr
    return f"{project}/{animal}/{session}"


def run_to_end(server: Server, pipelines: list[ProcessingPipeline], timeout: float = 120) -> PipelineManager:
    """Cycles the pipelines until they all finished (fails the test after ``timeout`` seconds)."""
    manager = PipelineManager(server, pipelines, poll_interval=0.5, max_interval=1.0)
    deadline = time.monotonic() + timeout
    while not manager.finished:
        assert time.monotonic() < deadline, [p.describe() for p in pipelines]
        manager.cycle()
        time.sleep(0.5)
    return manager


def configs_with(
    tmp_path: Path,
    pipeline: str,
    extra: dict[str, str],
    *,
    commands: dict[str, str] | None = None,
    **job_changes: object,
) -> Path:
    """A copy of the shipped configs: named jobs get extra arguments (or a whole new command)."""
    folder = tmp_path / "configs"
    folder.mkdir(exist_ok=True)
    data = yaml.safe_load((default_configs_dir() / f"{pipeline}.yaml").read_text())
    for stage in data["stages"]:
        for job in stage["jobs"]:
            if job["name"] in extra:
                job["command"] += " " + extra[job["name"]]
                job.update(job_changes)
            if commands and job["name"] in commands:
                job["command"] = commands[job["name"]]
    (folder / f"{pipeline}.yaml").write_text(yaml.safe_dump(data))
    return folder


def tracker_of(server: Server, pipeline: ProcessingPipeline) -> TrackerState:
    """The pipeline's tracker as it is on the server now."""
    text = server.read_text(pipeline.remote_tracker_path)
    assert text is not None
    return parse_tracker_text(text, path=pipeline.remote_tracker_path)


def start_manager(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Starts ``sl-process`` with these arguments in the background, its stderr into ``log``."""
    with log.open("wb") as stream:
        return subprocess.Popen([*SL_PROCESS, *argv], stdout=subprocess.PIPE, stderr=stream)


def jobs_in_slurm(server: Server, resolved: ResolvedPipeline, stages: Sequence[int] = ()) -> list[str]:
    """The run's jobs as Slurm's own records show them (squeue, then sacct where there is accounting):
    one entry per record, array tasks under their job's name (the task index is its stage position)."""
    wanted = stages or sorted(resolved.stages)
    by_stage = {stage: [r.name for r in resolved.stages[stage]] for stage in wanted}
    arrays = {array_name(f"{JOB_PREFIX}-{resolved.token}", stage): stage for stage in wanted}
    names = [name for jobs in by_stage.values() for name in jobs]
    found = server.probe(ProbeRequest(job_names=(*names, *arrays))).jobs
    records = []
    for status in found:
        if status.name in arrays:
            records.append(by_stage[arrays[status.name]][int(status.job_id.split("_")[1])])
        elif status.name in names:
            records.append(status.name)
    return records
