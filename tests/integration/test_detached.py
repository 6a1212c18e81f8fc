"""Detached runs on the testbed: the cluster finishes the run with no manager watching, and never reports
a success it did not have (a failed, silent, timed-out, cancelled or unreported job)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pipeline_helpers import SL_PROCESS, configs_with, generate, start_manager

from sl_pipelines.adapters.profiles import ServerProfile, save_profile
from sl_pipelines.adapters.server import Server
from sl_pipelines.core.tracker_text import parse_tracker_text
from sl_pipelines.orchestration.journal import RunJournal

pytestmark = pytest.mark.usefixtures("private_data_dir")


def _record(server: Server, project: str) -> RunJournal | None:
    records = [
        RunJournal.from_json(t, where="r")
        for t in server.read_files(server.working_root / "sl_jobs", "run.json").values()
    ]
    mine = [r for r in records if any(s.startswith(f"{project}/") for s in r.sessions)]
    return mine[0] if mine else None


def _wait_final(server: Server, project: str, timeout: float = 240) -> RunJournal:
    deadline = time.monotonic() + timeout
    while True:
        record = _record(server, project)
        if record is not None and record.status != "RUNNING":
            return record
        assert time.monotonic() < deadline, f"the detached run did not end: {record}"
        time.sleep(1)


def _detach(profile: ServerProfile, spec: str, configs: Path, tmp_path: Path, *, kill: bool = False) -> None:
    argv = [
        "suite2p",
        spec,
        "--server",
        profile.name,
        "--configs",
        str(configs),
        "--detach",
        "--param",
        "planes=4",
    ]
    manager = start_manager(argv, tmp_path / "manager.log")
    if kill:  # the lab PC goes off right after the submission
        deadline = time.monotonic() + 120
        while "is the cluster's now" not in (tmp_path / "manager.log").read_text() and manager.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        manager.send_signal(signal.SIGKILL)
    manager.communicate(timeout=120)
    assert manager.returncode in (0, -signal.SIGKILL), (tmp_path / "manager.log").read_text()


def _tracker(server: Server, record: RunJournal):  # type: ignore[no-untyped-def]
    text = server.read_text(Path(record.tracker))  # type: ignore[arg-type]
    assert text is not None
    return parse_tracker_text(text, path=Path(record.tracker))


@pytest.mark.parametrize("cluster", ["acct", "noacct"])
def test_a_detached_run_finishes_on_the_cluster_with_its_manager_gone(
    make_profile: Callable[..., ServerProfile], project: str, tmp_path: Path, cluster: str
) -> None:
    profile = make_profile(cluster, name=f"detach-{cluster}")
    save_profile(profile)
    server = Server(profile)
    spec = generate(server, project, "s1", planes=4)
    configs = configs_with(tmp_path, "suite2p", {"binarize": "--seconds 2"})
    _detach(profile, spec, configs, tmp_path, kill=True)
    watch = subprocess.run(  # from a second PC (its own user-data folder), read-only, until the run ends
        [*SL_PROCESS, "attach", "--server", profile.name, spec],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env={**os.environ, "SL_PIPELINES_DATA_DIR": str(tmp_path / "pc2")},
    )
    assert watch.returncode == 0, watch.stderr
    assert not (tmp_path / "pc2").exists(), "watching writes nothing"
    record = _wait_final(server, project)
    assert (record.status, record.reason, record.mode) == ("SUCCEEDED", "", "detached")
    assert _tracker(server, record).is_complete
    status = subprocess.run(
        [*SL_PROCESS, "status", "--server", profile.name, spec, "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert json.loads(status.stdout)[0]["status"] == "SUCCEEDED"
    assert server.list_dir(server.working_root / "sl_jobs" / record.token) == ("run.json",)
    worked = sorted(job_id for name, job_id in record.job_ids.items() if name != "settle")
    assert sorted(record.usage) == worked, "the settling job recorded what every job used (not itself)"
    assert all(u["cpu_s"] > 0 and u["max_rss_mb"] > 0 and u["node"] for u in record.usage.values())
    binarize = next(u for u in record.usage.values() if u["name"].endswith("-binarize"))
    assert binarize["source"] == ("sacct" if cluster == "acct" else "job") and binarize["elapsed_s"] >= 2
    server.close()


FAULTS = [
    ("a stage-1 job fails", {"binarize": "--fail 'disk on fire'"}, {}, "disk on fire", "binarize"),
    (
        "a stage-1 job exits 0 without reporting",
        {"binarize": "--no-report"},
        {},
        "never reported",
        "binarize",
    ),
    (
        "a last-stage job exits without reporting",
        {"combine": "--no-report"},
        {},
        "without reporting",
        "combine",
    ),
]


@pytest.mark.parametrize("cluster", ["acct", "noacct"])
@pytest.mark.parametrize(
    ("case", "extra", "commands", "words", "culprit"), FAULTS, ids=[f[0] for f in FAULTS]
)
def test_a_detached_run_never_reports_a_success_it_did_not_have(
    make_profile: Callable[..., ServerProfile],
    project: str,
    tmp_path: Path,
    case: str,
    extra: dict[str, str],
    commands: dict[str, str],
    words: str,
    culprit: str,
    cluster: str,
) -> None:
    profile = make_profile(cluster, name="detach-fault")
    save_profile(profile)
    server = Server(profile)
    spec = generate(server, project, "s1", planes=4)
    _detach(profile, spec, configs_with(tmp_path, "suite2p", extra, commands=commands), tmp_path)
    record = _wait_final(server, project)
    assert record.status == "FAILED" and words in record.reason, record.reason
    failure = _tracker(server, record).failure
    assert failure is not None and words in failure.reason
    assert culprit in record.reason or culprit in failure.job or culprit in failure.reason
    if culprit == "binarize":  # no later stage's work ran
        planes = server.list_dir(server.working_root / spec / "processed_data" / "suite2p")
        assert not any(name.startswith("plane") for name in planes), planes
    server.close()


@pytest.mark.parametrize("cluster", ["acct", "noacct"])
def test_a_detached_run_whose_job_is_cancelled_by_hand_fails_naming_it(
    make_profile: Callable[..., ServerProfile], project: str, tmp_path: Path, cluster: str
) -> None:
    profile = make_profile(cluster, name="detach-cancel")
    save_profile(profile)
    server = Server(profile)
    spec = generate(server, project, "s1", planes=2)
    _detach(profile, spec, configs_with(tmp_path, "suite2p", {"binarize": "--seconds 60"}), tmp_path)
    record = _record(server, project)
    assert record is not None
    binarize = next(job_id for name, job_id in record.job_ids.items() if name.endswith("-1-binarize"))
    time.sleep(3)
    server.cancel([binarize])
    final = _wait_final(server, project)
    assert final.status == "FAILED" and "binarize" in final.reason
    assert "CANCELLED" in final.reason or "a cancel" in final.reason, final.reason
    server.close()


@pytest.mark.slow
def test_a_detached_run_whose_job_hits_its_time_limit_fails_and_nothing_later_runs(
    make_profile: Callable[..., ServerProfile], project: str, tmp_path: Path
) -> None:
    profile = make_profile("noacct", name="detach-timeout")
    save_profile(profile)
    server = Server(profile)
    spec = generate(server, project, "s1", planes=2)
    configs = configs_with(tmp_path, "suite2p", {"binarize": "--seconds 300"}, time_limit_minutes=1)
    _detach(profile, spec, configs, tmp_path)
    final = _wait_final(server, project, timeout=300)
    assert final.status == "FAILED" and "binarize" in final.reason
    assert "TIMEOUT" in final.reason or "time limit" in final.reason, final.reason
    planes = server.list_dir(server.working_root / spec / "processed_data" / "suite2p")
    assert not any(name.startswith("plane") for name in planes), planes
    server.close()


def test_an_attached_run_abandoned_is_converted_to_detached_and_finishes(
    make_profile: Callable[..., ServerProfile], project: str, tmp_path: Path
) -> None:
    profile = make_profile("noacct", name="to-detached")
    save_profile(profile)
    server = Server(profile)
    spec = generate(server, project, "s1", planes=2)
    configs = configs_with(tmp_path, "suite2p", {"binarize": "--seconds 6"})
    argv = ["suite2p", spec, "--server", profile.name, "--configs", str(configs)]
    manager = start_manager([*argv, "--poll-interval", "0.5"], tmp_path / "attached.log")
    deadline = time.monotonic() + 60
    while (
        _record(server, project) is None or not _record(server, project).job_ids
    ) and time.monotonic() < deadline:  # type: ignore[union-attr]
        time.sleep(0.5)
    manager.send_signal(signal.SIGKILL)  # the PC goes off during stage 1
    manager.communicate()
    converted = subprocess.run(
        [*SL_PROCESS, *argv, "--resume", "--detach"], capture_output=True, text=True, timeout=120, check=False
    )
    assert converted.returncode == 0, converted.stderr
    assert "is the cluster's now" in converted.stderr
    record = _wait_final(server, project)
    assert (record.status, record.mode) == ("SUCCEEDED", "detached"), record.reason
    assert _tracker(server, record).is_complete
    server.close()


def test_a_detached_dataset_pipeline_settles_like_the_others(
    make_profile: Callable[..., ServerProfile], project: str, tmp_path: Path
) -> None:
    profile = make_profile("acct", name="detach-dataset")
    save_profile(profile)
    server = Server(profile)
    sessions = [generate(server, project, "s1", animal="A1"), generate(server, project, "s2", animal="A2")]
    argv = ["multiday", *sessions, "--server", profile.name, "--detach"]
    done = subprocess.run([*SL_PROCESS, *argv], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    record = _wait_final(server, project)
    assert (record.status, record.mode, record.sessions) == ("SUCCEEDED", "detached", tuple(sessions))
    for spec in sessions:  # each session's extract job worked on its own session
        assert server.list_dir(server.working_root / spec / "processed_data" / "multiday")
    server.close()
