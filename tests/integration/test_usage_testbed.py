"""What jobs really used, on the real testbed: sacct on the cluster with accounting, the job's own
measurement on the one without; a job that allocates ~200 MB and burns ~2 CPU-seconds is reported within
20% on both."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest
import yaml
from pipeline_helpers import generate, run_to_end

from sl_pipelines.adapters.server import Server
from sl_pipelines.core.seams import ProbeRequest
from sl_pipelines.orchestration.journal import RunJournal
from sl_pipelines.orchestration.pipeline import ProcessingPipeline, default_configs_dir
from sl_pipelines.vocabulary import ProcessingStatus

pytestmark = pytest.mark.usefixtures("private_data_dir")

DEMO = "sl-worker demo {tracked} {session_args} --pipeline behavior"
MEMORY_MB, CPU_S = 200, 2.0


def _configs(tmp_path: Path) -> Path:
    """Behavior with a heavy first stage (holding the memory 1 s longer, so Slurm samples it) and a
    light last stage (whose usage comes with the run's end)."""
    folder = tmp_path / "configs"
    folder.mkdir(exist_ok=True)
    data = yaml.safe_load((default_configs_dir() / "behavior.yaml").read_text())
    data["defaults"] = {"cpus": 1, "memory_gb": 1, "time_limit_minutes": 5}
    heavy = f"{DEMO} --part load --memory-mb {MEMORY_MB} --cpu-seconds {CPU_S} --seconds 1"
    data["stages"] = [
        {"name": "heavy", "jobs": [{"name": "load", "command": heavy}]},
        {  # two jobs asking the same: one array, whose tasks' usage is asked as <array id>_<index>
            "name": "light",
            "jobs": [{"name": f"light{i}", "cpus": 2, "command": f"{DEMO} --part light{i}"} for i in (1, 2)],
        },
    ]
    (folder / "behavior.yaml").write_text(yaml.safe_dump(data))
    return folder


def test_usage_is_reported_within_20_percent(slurm_server: Server, project: str, tmp_path: Path) -> None:
    spec = generate(slurm_server, project, "S1", planes=1)
    pipeline = ProcessingPipeline.create("behavior", [spec], slurm_server, configs_dir=_configs(tmp_path))
    run_to_end(slurm_server, [pipeline], timeout=60)
    assert pipeline.status is ProcessingStatus.SUCCEEDED, pipeline.describe()
    accounting = slurm_server.accounting_mode.value == "sacct"
    ids = pipeline.state.job_ids
    usage = pipeline.journal.usage
    assert sorted(usage) == sorted(ids.values()), "every job's usage, the last stage's too"
    load = usage[next(i for name, i in ids.items() if name.endswith("-load"))]
    assert load["source"] == ("sacct" if accounting else "job"), load
    assert load["max_rss_mb"] == pytest.approx(MEMORY_MB, rel=0.2), load
    assert load["cpu_s"] == pytest.approx(CPU_S, rel=0.2), load
    assert load["node"].endswith("-n1") and load["state"] == "COMPLETED"
    assert (load["cpus"], load["requested_memory_mb"], load["time_limit_minutes"]) == (1, 1024, 5)
    assert load["elapsed_s"] >= 2 and 0.2 < load["cpu_efficiency"] <= 1
    assert load["queue_wait_s"] >= 0 and load["started_at"] <= load["ended_at"]
    tasks = [job_id for name, job_id in ids.items() if "-light" in name]
    assert len(tasks) == 2 and all("_" in job_id for job_id in tasks), "the light stage went as an array"
    for light in (usage[job_id] for job_id in tasks):
        assert (light["stage"], light["cpus"]) == (2, 2) and light["max_rss_mb"] < MEMORY_MB / 2, light
        assert light["source"] == load["source"] and light["node"] == load["node"], light
    record = RunJournal.from_json(slurm_server.read_text(pipeline.record_path) or "", where="record")
    assert record.usage == usage, "the run's record on the server holds it"
    assert slurm_server.list_dir(pipeline.resolved.jobs_folder) == ("run.json",), "usage files read, gone"
    if accounting:  # sacct alone (no job file): its own sampled MaxRSS and TotalCPU are right too
        job_id = next(i for name, i in ids.items() if name.endswith("-load"))
        alone = slurm_server.probe(ProbeRequest(usage=((job_id, PurePosixPath("/nonexistent/u.json")),)))
        measured = alone.usage[job_id]
        assert measured.source == "sacct" and measured.max_rss_mb == pytest.approx(MEMORY_MB, rel=0.2)
        assert measured.cpu_s == pytest.approx(CPU_S, rel=0.2), measured
