"""What jobs used, on the embedded local backend: real processes measure themselves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sl_pipelines.adapters.local import LocalBackend
from sl_pipelines.cli import process
from sl_pipelines.core.seams import ProbeRequest, ProbeResult
from sl_pipelines.core.usage import Measured
from sl_pipelines.orchestration.journal import RunJournal
from sl_pipelines.orchestration.manager import PipelineManager
from sl_pipelines.orchestration.pipeline import ProcessingPipeline, default_configs_dir
from sl_pipelines.vocabulary import ProcessingStatus
from sl_pipelines.workers.demo_data import generate_session

DEMO = "sl-worker demo {tracked} {session_args} --pipeline behavior"


def usage_configs(tmp_path: Path, load: str = "--memory-mb 200 --cpu-seconds 2") -> Path:
    """The behavior definition with two stages: one job that uses ~200 MB and ~2 CPU-seconds, then two
    light ones (the first stage's usage comes with a later probe, the last one's at the run's end)."""
    folder = tmp_path / "usage-configs"
    folder.mkdir(exist_ok=True)
    data = yaml.safe_load((default_configs_dir() / "behavior.yaml").read_text())
    data["defaults"] = {"cpus": 1, "memory_gb": 4, "time_limit_minutes": 90}
    data["stages"] = [
        {"name": "heavy", "jobs": [{"name": "load", "command": f"{DEMO} --part load {load}"}]},
        {
            "name": "light",
            "jobs": [
                {"name": "one", "cpus": 2, "command": f"{DEMO} --part one"},
                {"name": "two", "command": f"{DEMO} --part two --seconds 0.5"},
            ],
        },
    ]
    (folder / "behavior.yaml").write_text(yaml.safe_dump(data))
    return folder


def test_every_job_records_what_it_used(local_backend: LocalBackend, tmp_path: Path) -> None:
    generate_session(Path(local_backend.storage_root), "proj", "A1", "S1", planes=1, size_kb=4)
    pipeline = ProcessingPipeline.create(
        "behavior", ["proj/A1/S1"], local_backend, configs_dir=usage_configs(tmp_path)
    )
    asked: list[str] = []
    original = local_backend.probe

    def counting(request: ProbeRequest) -> ProbeResult:
        asked.extend(job_id for job_id, _ in request.usage)
        return original(request)

    local_backend.probe = counting  # type: ignore[method-assign]
    manager = PipelineManager(local_backend, [pipeline], poll_interval=0.2, max_interval=0.5)
    manager.run()
    assert pipeline.status is ProcessingStatus.SUCCEEDED, pipeline.describe()
    assert sorted(asked) == sorted(pipeline.state.job_ids.values()), "asked once per ended job, no more"
    assert manager.cycles > 4, "while jobs ran, cycles asked for nothing"
    usage = pipeline.journal.usage
    ids = pipeline.state.job_ids
    assert sorted(usage) == sorted(ids.values()), "one record per job, the last stage's too"
    load = usage[next(i for n, i in ids.items() if n.endswith("-load"))]
    assert load["source"] == "job" and load["state"] == "COMPLETED" and load["stage"] == 1
    assert 160 <= load["max_rss_mb"] <= 240, load
    assert 1.6 <= load["cpu_s"] <= 2.4, load
    assert load["requested_memory_mb"] == 4096 and load["cpus"] == 1 and load["time_limit_minutes"] == 90
    assert load["elapsed_s"] >= load["cpu_s"] * 0.9 and 0 < load["cpu_efficiency"] <= 1
    assert load["queue_wait_s"] >= 0 and load["node"] and load["ended_at"] >= load["started_at"]
    light = [usage[i] for n, i in ids.items() if not n.endswith("-load")]
    assert {r["stage"] for r in light} == {2} and {r["cpus"] for r in light} == {1, 2}
    assert all(r["max_rss_mb"] < 150 for r in light), light
    record = RunJournal.load(Path(pipeline.resolved.jobs_folder) / "run.json")
    assert record.usage == usage, "the run's record on the server has it too"


def test_summary_shows_usage_per_stage_with_hints_and_json_and_status_carry_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "local"
    generate_session(root / "storage", "proj", "A1", "S1", planes=1, size_kb=4)
    configs = str(usage_configs(tmp_path, load="--memory-mb 100 --cpu-seconds 0.5"))
    common = ["--local-root", str(root), "--configs", configs, "--poll-interval", "0.2"]
    assert process.main(["behavior", "proj/A1/S1", *common]) == 0
    out = capsys.readouterr().out
    assert "What the jobs used" in out and "1 heavy" in out and "2 light" in out, out
    assert "CPU-hours in all (3 jobs; from job)" in out, out
    assert "hint: behavior load: used 100 MB of 4 GB — lower memory_gb" in out, out
    assert process.main(["behavior", "proj/A1/S1", *common, "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert len(result["usage"]) == 3 and {r["source"] for r in result["usage"].values()} == {"job"}
    stages = {s["stage_name"]: s for s in result["usage_by_stage"]}
    assert stages["heavy"]["jobs"] == 1 and stages["light"]["jobs"] == 2
    assert stages["heavy"]["max_rss_mb"] == pytest.approx(100, rel=0.2)
    assert stages["heavy"]["cpu_hours"] == pytest.approx(0.5 / 3600, rel=0.5)
    assert "behavior one: kept" in " ".join(result["usage_hints"]), "2 CPUs asked, barely one used"
    assert process.main(["status", "--local-root", str(root), "--all", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [len(run["usage"]) for run in runs] == [3, 3], "the runs' records hold it"


def test_usage_is_asked_again_while_sacct_lags_and_given_up_after_three_asks(
    local_backend: LocalBackend, tmp_path: Path
) -> None:
    generate_session(Path(local_backend.storage_root), "proj", "A1", "S1", planes=1, size_kb=4)
    pipeline = ProcessingPipeline.create(
        "behavior", ["proj/A1/S1"], local_backend, configs_dir=usage_configs(tmp_path)
    )
    names = [r.name for r in pipeline.resolved.all_jobs()]
    pipeline.usage_wanted = {"11": (names[0], "COMPLETED", 3), "12": (names[1], "FAILED", 3)}
    own = Measured(cpu_s=1.0, max_rss_mb=50.0, pending=True)  # sacct has no final record yet
    for _ in range(2):
        pipeline.take_usage(ProbeResult(usage={"11": own}))
        assert set(pipeline.usage_wanted) == {"11", "12"} and not pipeline.journal.usage
    pipeline.take_usage(ProbeResult(usage={"11": own}))  # the third ask: the job's own figures are kept
    assert not pipeline.usage_wanted, "nothing answered for 12 three times: given up"
    assert list(pipeline.journal.usage) == ["11"] and pipeline.journal.usage["11"]["source"] == "job"
    assert pipeline.journal.usage["11"]["requested_memory_mb"] == 4096, "the request from the definition"
    pipeline.usage_wanted = {"13": (names[1], "FAILED", 3)}
    pipeline.take_usage(ProbeResult(usage={"13": Measured(source="sacct", state="OUT_OF_MEMORY")}))
    assert pipeline.journal.usage["13"]["state"] == "OUT_OF_MEMORY" and pipeline.record_dirty
    assert RunJournal.load(pipeline.journal.path).usage == pipeline.journal.usage, "journaled"
