"""Runs that live on the server: the record, resuming from another PC, and one driver at a time (the
lease), on the local backend with real manager processes (each "PC" is its own user-data folder)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sl_pipelines.orchestration.journal import RunJournal
from sl_pipelines.orchestration.pipeline import default_configs_dir
from sl_pipelines.workers.demo_data import generate_session

SESSION = "proj/A1/s1"
CODE = "from sl_pipelines.cli.process import main; raise SystemExit(main())"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    generate_session(tmp_path / "local" / "storage", "proj", "A1", "s1", planes=2, size_kb=4)
    return tmp_path / "local"


@pytest.fixture
def slow_configs(tmp_path: Path) -> Path:
    folder = tmp_path / "configs"
    folder.mkdir()
    data = yaml.safe_load((default_configs_dir() / "suite2p.yaml").read_text())
    data["stages"][0]["jobs"][0]["command"] += " --seconds 3"
    data["stages"][1]["jobs"][0]["command"] += " --seconds 10"
    (folder / "suite2p.yaml").write_text(yaml.safe_dump(data))
    return folder


def manager(root: Path, pc: Path, *extra: str, configs: Path | None = None) -> subprocess.Popen[str]:
    """``sl-process suite2p`` as run on the PC whose user-data folder is ``pc``."""
    argv = [
        sys.executable,
        "-c",
        CODE,
        "suite2p",
        SESSION,
        "--local-root",
        str(root),
        "--poll-interval",
        "0.2",
    ]
    argv += ["--configs", str(configs)] if configs else []
    env = dict(os.environ, SL_PIPELINES_DATA_DIR=str(pc))
    return subprocess.Popen(
        [*argv, *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def records(root: Path) -> list[RunJournal]:
    return [RunJournal.load(p) for p in (root / "working" / "sl_jobs").glob("*/run.json")]


def wait_for(condition: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_run_abandoned_on_one_pc_is_resumed_from_another_by_its_record(
    root: Path, slow_configs: Path, tmp_path: Path
) -> None:
    first = manager(root, tmp_path / "pc1", configs=slow_configs)
    wait_for(lambda: any(r.job_ids for r in records(root)), "the record of a submitted stage")
    first.kill()  # the PC is switched off: only the server's record and the running jobs remain
    first.communicate()
    (record,) = records(root)
    assert record.started_by["pid"] == str(first.pid) and record.status == "RUNNING"
    assert "pipeline: suite2p" in record.definition
    second = manager(root, tmp_path / "pc2", "--resume", "--json")  # no journal there, no --configs
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    (result,) = json.loads(out)
    assert result["status"] == "SUCCEEDED" and result["run_token"] == record.token
    (final,) = records(root)
    assert final.status == "SUCCEEDED"
    jobs = [json.loads(p.read_text()) for p in (root / ".sl_local" / "jobs").glob("*.json")]
    scripts = [Path(job["script"]).name for job in jobs]
    assert len(scripts) == len(set(scripts)) == 4, "no job ran twice"


def test_a_second_manager_is_refused_naming_the_first_and_can_take_over(
    root: Path, slow_configs: Path, tmp_path: Path
) -> None:
    first = manager(root, tmp_path / "pc1", "--json", configs=slow_configs)
    wait_for(lambda: any(r.job_ids for r in records(root)), "stage 1")
    refused = manager(root, tmp_path / "pc2", "--resume")
    _, err = refused.communicate(timeout=60)
    assert refused.returncode == 1
    assert f"already driven by pid {first.pid}" in " ".join(err.split())
    assert "--take-over" in err
    taker = manager(root, tmp_path / "pc2", "--resume", "--take-over", "--json")
    out, err = taker.communicate(timeout=120)
    assert taker.returncode == 0, err
    assert json.loads(out)[0]["status"] == "SUCCEEDED"
    first_out, _ = first.communicate(timeout=60)
    assert json.loads(first_out)[0]["status"] == "ABORTED"
    assert "took this run over" in json.loads(first_out)[0]["reason"]


def test_a_stale_lease_of_another_computer_is_taken(root: Path, slow_configs: Path, tmp_path: Path) -> None:
    first = manager(root, tmp_path / "pc1", configs=slow_configs)
    wait_for(lambda: any(r.job_ids for r in records(root)), "stage 1")
    first.kill()
    first.communicate()
    (lease,) = (root / "working" / "sl_jobs").glob("*/lease")
    lease.write_text("someone\nuser=ana\nhost=lab-pc-7\npid=4242\nstale_after=120\n")
    fresh = manager(root, tmp_path / "pc2", "--resume")
    _, err = fresh.communicate(timeout=60)
    assert fresh.returncode == 1 and "pid 4242 of ana on lab-pc-7" in " ".join(err.split())
    old = time.time() - 600
    os.utime(lease, (old, old))  # that PC has not been seen for ten minutes
    stale = manager(root, tmp_path / "pc2", "--resume", "--json")
    out, err = stale.communicate(timeout=120)
    assert stale.returncode == 0, err
    assert json.loads(out)[0]["status"] == "SUCCEEDED"


def test_status_attach_and_cancel_from_another_pc(root: Path, slow_configs: Path, tmp_path: Path) -> None:
    first = manager(root, tmp_path / "pc1", "--json", configs=slow_configs)
    wait_for(lambda: any(r.job_ids for r in records(root)), "stage 1")
    pc2 = dict(os.environ, SL_PIPELINES_DATA_DIR=str(tmp_path / "pc2"))
    base = [sys.executable, "-c", CODE]
    status = subprocess.run(
        [*base, "status", "--local-root", str(root), "--json"],
        env=pc2,
        capture_output=True,
        text=True,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    (row,) = json.loads(status.stdout)
    assert row["pipeline"] == "suite2p" and row["status"] == "RUNNING" and row["stages"] == 3
    assert f"pid {first.pid}" in row["driver"]
    assert not list((tmp_path / "pc2").glob("runs/*.json")), "looking in writes nothing"
    cancel = subprocess.run(
        [*base, "cancel", "--local-root", str(root), SESSION, "--yes"],
        env=pc2,
        capture_output=True,
        text=True,
        check=False,
    )
    assert cancel.returncode == 0, cancel.stderr
    out, _ = first.communicate(timeout=60)
    assert json.loads(out)[0]["status"] == "ABORTED", "the first manager stops driving the cancelled run"
    (record,) = records(root)
    assert record.status == "FAILED" and "sl-process cancel" in record.reason
    attach = subprocess.run(
        [*base, "attach", "--local-root", str(root), record.token],
        env=pc2,
        capture_output=True,
        text=True,
        check=False,
    )
    assert attach.returncode == 1 and "FAILED" in attach.stdout
