"""Workflows end to end on the embedded local backend: real jobs, real trackers, real session locks."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sl_pipelines.adapters.local import LocalBackend
from sl_pipelines.cli import process, tracker
from sl_pipelines.core.layout import SessionPaths
from sl_pipelines.core.lease import Holder
from sl_pipelines.core.probe import ProbeRequest
from sl_pipelines.core.workflow import load_workflow, workflow_path
from sl_pipelines.orchestration.manager import PipelineManager
from sl_pipelines.orchestration.pipeline import default_configs_dir
from sl_pipelines.orchestration.session_locks import lock_folder, lock_path, take_locks
from sl_pipelines.orchestration.sessions import find_sessions
from sl_pipelines.orchestration.workflow import WorkflowRun
from sl_pipelines.vocabulary import ProcessingPipelines as P
from sl_pipelines.vocabulary import ProcessingStatus
from sl_pipelines.workers.checksum import calculate_checksum, write_checksum
from sl_pipelines.workers.demo_data import generate_session

SESSIONS = ("proj/A1/2026-01-05-10-00-00", "proj/A1/2026-01-06-10-00-00", "proj/A2/2026-01-05-10-00-00")
BROKEN = SESSIONS[1]  # its behavior inputs are gone (and its checksum recalculated, so checksum passes)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    storage = tmp_path / "local" / "storage"
    for name in SESSIONS:
        project, animal, session = name.split("/")
        generate_session(storage, project, animal, session, planes=1, size_kb=1)
    raw = storage / BROKEN / "raw_data"
    shutil.rmtree(raw / "behavior_data")
    write_checksum(raw, calculate_checksum(raw))
    return tmp_path / "local"


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = process.main(argv)
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip().startswith("{") else {"text": out}


def test_a_workflow_runs_each_session_on_its_own_then_the_dataset_and_the_manifest(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--workflow", "quick", "proj/*/*", "--local-root", str(root), "--json", "--poll-interval", "0.2"]
    code, result = _run(argv, capsys)
    assert code == 1, result
    by_session = {s["session"]: s for s in result["sessions"]}
    broken = by_session[BROKEN]
    statuses = {name: p["status"] for name, p in broken["pipelines"].items()}
    assert statuses == {"checksum": "SUCCEEDED", "behavior": "FAILED", "video": "SUCCEEDED"}
    assert broken["outcome"] == "stopped" and broken["reason"] == "behavior failed"
    for name in set(SESSIONS) - {BROKEN}:
        assert by_session[name]["outcome"] == "done"
        assert {p["status"] for p in by_session[name]["pipelines"].values()} == {"SUCCEEDED"}
    (forging,) = result["dataset"]
    assert forging["pipeline"] == "forging" and forging["status"] == "SUCCEEDED"
    forged = root / "working" / "proj"
    assert sorted(
        p.parent.parent.relative_to(forged).as_posix() for p in forged.glob("*/*/processed_data/forging")
    ) == [
        "A1/2026-01-05-10-00-00",
        "A2/2026-01-05-10-00-00",
    ], "forging ran over exactly the sessions that reached it"
    (manifest,) = result["manifest"]
    assert manifest["status"] == "SUCCEEDED"
    rows = (root / "storage" / "proj" / "manifest.csv").read_text().splitlines()
    header = rows[0].split(",")
    table = {tuple(r.split(",")[:2]): dict(zip(header, r.split(","), strict=True)) for r in rows[1:]}
    assert table["A1", "2026-01-06-10-00-00"]["behavior"] == "failed"
    assert table["A1", "2026-01-05-10-00-00"]["forging"] == "succeeded"
    for name in SESSIONS:
        assert not (root / "storage" / name / "tracking_data" / "workflow").exists(), "locks released"

    # --pending: the failed session runs only what did not complete; with a dataset step, the complete
    # sessions of its project come back as members of the dataset (every step skipped)
    code = process.main([*argv[:5], "--pending", "--dry-run"])
    out = " ".join(capsys.readouterr().out.split())
    assert code == 0
    assert "3 sessions chosen, 0 left out" in out
    assert f"{BROKEN} │ (checksum: complete) → [behavior, (video: complete)]" in out
    assert f"{SESSIONS[0]} │ every step complete: a member of the forging dataset" in out

    # the data fixed, the re-run with --pending runs behavior alone, then forging over all three
    again = root.parent / "again"
    generate_session(again, *BROKEN.split("/"), planes=1, size_kb=1)
    shutil.copytree(
        again / BROKEN / "raw_data" / "behavior_data",
        root / "storage" / BROKEN / "raw_data" / "behavior_data",
    )
    code, result = _run([*argv, "--pending"], capsys)
    assert code == 0, result
    ran = {s["session"]: sorted(s["pipelines"]) for s in result["sessions"]}
    assert ran == {BROKEN: ["behavior"], SESSIONS[0]: [], SESSIONS[2]: []}, "checksum would fail: not re-run"
    (forging,) = result["dataset"]
    assert forging["status"] == "SUCCEEDED"
    assert len(list(forged.glob("*/*/processed_data/forging"))) == 3


def test_pending_on_named_sessions_reads_their_trackers_and_leaves_out_the_complete_ones(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configs = tmp_path / "configs"
    shutil.copytree(default_configs_dir(), configs)
    (configs / "workflows" / "short.yaml").write_text(
        "workflow: short\nsteps: [checksum, [behavior, video]]\n"
    )
    named = ["--workflow", "short", SESSIONS[0], BROKEN, "--local-root", str(root), "--configs", str(configs)]
    code, result = _run([*named, "--json", "--poll-interval", "0.2"], capsys)
    assert code == 1 and result["dataset"] == []
    assert process.main([*named, "--pending", "--dry-run"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "1 sessions chosen, 1 left out" in out
    assert f"{SESSIONS[0]} │ left out: every step already complete" in out
    assert f"{BROKEN} │ (checksum: complete) → [behavior, (video: complete)]" in out


def test_parallel_steps_run_at_once_and_every_session_shares_one_probe_per_cycle(
    local_backend: LocalBackend,
) -> None:
    for name in SESSIONS[::2]:
        generate_session(Path(local_backend.storage_root), *name.split("/"), planes=1, size_kb=1)
    probes: list[ProbeRequest] = []
    original = local_backend.probe

    def counting(request: ProbeRequest) -> Any:
        probes.append(request)
        return original(request)

    local_backend.probe = counting  # type: ignore[method-assign]
    workflow = load_workflow(workflow_path(default_configs_dir(), "quick"))
    found = find_sessions(local_backend, list(SESSIONS[::2]))
    run = WorkflowRun(workflow, local_backend, [(f, ()) for f in found])
    manager = PipelineManager(local_backend, [], poll_interval=0.1)
    together: set[tuple[str, ...]] = set()

    def observe(m: PipelineManager) -> None:
        for progress in run.sessions:
            running = tuple(sorted(p.short_name for p, r in progress.runs.items() if r.is_running))
            together.add(running)

    assert run.run(manager, observer=observe)
    assert ("behavior", "video") in together, "the parallel step's pipelines were in flight together"
    assert len(probes) == manager.cycles + 1, "one probe per cycle, and one for what the last jobs used"
    assert any(len({t.parent for t in r.tracker_paths}) == 2 for r in probes), "both sessions in one probe"
    locks = {lock_path(f.paths) for f in found}
    assert any(locks <= {path for path, _ in r.leases} for r in probes), "the locks renewed by the probe"
    assert [p.pipeline for p in run.manifest_runs] == [P.MANIFEST]
    assert all(p.status is ProcessingStatus.SUCCEEDED for p in run.pipelines)


def _holder(pid: int, host: str) -> Holder:
    return Holder("other-run", "ana", host, pid, 3600.0, (("workflow", "other-run"), ("started", "then")))


@pytest.fixture
def locked(root: Path) -> Iterator[LocalBackend]:
    backend = LocalBackend(root, max_jobs=8)
    paths = SessionPaths(backend.storage_root, backend.working_root, *SESSIONS[0].split("/"))
    taken, refused = take_locks(backend, [(SESSIONS[0], paths)], _holder(1, "lab-pc-elsewhere"))
    assert taken == [SESSIONS[0]] and not refused
    yield backend


def test_a_session_locked_by_another_live_workflow_is_left_out_naming_the_owner(
    locked: LocalBackend, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--workflow", "quick", SESSIONS[0], SESSIONS[2], "--local-root", str(root), "--json"]
    code, result = _run([*argv, "--poll-interval", "0.2"], capsys)
    assert code == 1
    (refused,) = result["refused"]
    assert refused["session"] == SESSIONS[0]
    assert "other-run" in refused["locked_by"] and "ana on lab-pc-elsewhere" in refused["locked_by"]
    assert [s["session"] for s in result["sessions"]] == [SESSIONS[2]]
    assert result["sessions"][0]["outcome"] == "done"
    lock = root / "storage" / SESSIONS[0] / "tracking_data" / "workflow" / "lease"
    assert lock.read_text().splitlines()[0] == "other-run", "another run's lock is never released"
    assert not (
        root / "storage" / SESSIONS[0] / "tracking_data" / "checksum_resolution_tracker.yaml"
    ).exists()

    # sl-tracker unlock releases it, and then the workflow runs there
    assert tracker.main(["--local-root", str(root), "unlock", SESSIONS[0], "--yes"]) == 0
    assert "other-run" in capsys.readouterr().out
    assert not lock.exists()


def test_a_lock_of_a_workflow_of_this_computer_that_ended_is_taken_over(locked: LocalBackend) -> None:
    backend = locked
    paths = SessionPaths(backend.storage_root, backend.working_root, *SESSIONS[0].split("/"))
    gone = _holder(2**22 + 12345, socket.gethostname())  # above pid_max: no such process
    shutil.rmtree(Path(lock_folder(paths)))
    assert take_locks(backend, [(SESSIONS[0], paths)], gone)[0] == [SESSIONS[0]]
    mine = Holder("mine", "me", socket.gethostname(), 1, 60.0)
    taken, refused = take_locks(backend, [(SESSIONS[0], paths)], mine)
    assert taken == [SESSIONS[0]] and not refused
    assert Path(lock_path(paths)).read_text().splitlines()[0] == "mine"


def test_a_session_whose_lock_is_released_starts_no_later_step(local_backend: LocalBackend) -> None:
    for name in SESSIONS[::2]:
        generate_session(Path(local_backend.storage_root), *name.split("/"), planes=1, size_kb=1)
    workflow = load_workflow(workflow_path(default_configs_dir(), "quick"))
    found = find_sessions(local_backend, list(SESSIONS[::2]))
    run = WorkflowRun(workflow, local_backend, [(f, ()) for f in found])
    manager = PipelineManager(local_backend, [], poll_interval=0.1)
    victim = run.sessions[0]
    released: list[bool] = []

    def release_after_checksum(m: PipelineManager) -> None:
        checksum = victim.runs.get(P.CHECKSUM)
        if not released and checksum is not None and checksum.is_running:
            assert (
                tracker.main(["--local-root", str(local_backend.root), "unlock", victim.name, "--yes"]) == 0
            )
            released.append(True)

    assert not run.run(manager, observer=release_after_checksum)
    assert released
    assert victim.decision.kind.value == "stopped" and "lock" in victim.decision.reason
    assert P.BEHAVIOR not in victim.runs, "no step started after the lock was released"
    other = run.sessions[1]
    assert other.decision.kind.value == "done"
    (forging,) = run.dataset_runs
    assert forging.journal.sessions == (other.name,)


def test_sl_tracker_abort_releases_the_workflow_lock_too(
    locked: LocalBackend, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lock = root / "storage" / SESSIONS[0] / "tracking_data" / "workflow" / "lease"
    assert lock.exists()
    argv = ["--local-root", str(root), "abort", SESSIONS[0], "--pipeline", "checksum"]
    assert tracker.main(argv) == 2, "no confirmation without a terminal"
    assert lock.exists()
    assert tracker.main([*argv, "--yes"]) == 0
    out = capsys.readouterr().out
    assert "Released the workflow lock" in out and "other-run" in out
    assert not lock.exists()
