"""Workflows on the real testbed: lab-daily over six sessions of two animals, one of them broken."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Iterator

import pytest

from sl_pipelines.adapters.profiles import ServerProfile, save_profile
from sl_pipelines.adapters.server import Server
from sl_pipelines.cli import process, tracker
from sl_pipelines.core.layout import SessionPaths
from sl_pipelines.core.lease import Holder
from sl_pipelines.orchestration.session_locks import lock_path, take_locks

pytestmark = pytest.mark.usefixtures("private_data_dir")

DAYS = ("2026-01-05-10-00-00", "2026-01-06-10-00-00", "2026-01-07-10-00-00")


@pytest.fixture
def server(
    make_server: Callable[..., Server], make_profile: Callable[..., ServerProfile]
) -> Iterator[Server]:
    """The no-accounting cluster (the one every testbed instance has), saved as profile ``wf``."""
    save_profile(make_profile("noacct", name="wf"))
    yield make_server("noacct")


@pytest.fixture
def workflow_project(server: Server) -> Iterator[str]:
    name = "itest-wf"
    server.remove(server.storage_root / name)
    server.remove(server.working_root / name)
    yield name
    server.remove(server.storage_root / name)
    server.remove(server.working_root / name)


def _generate(server: Server, project: str, broken: str) -> None:
    """Six sessions on the server; ``broken`` loses its behavior runtime log (its checksum recalculated,
    so that checksum and preparation pass and behavior fails)."""
    env = shlex.quote(server.environment.value)
    root = shlex.quote(str(server.storage_root))
    raw = shlex.quote(str(server.storage_root / broken / "raw_data"))
    fix = (
        "from pathlib import Path; import sys; from sl_pipelines.workers.checksum import calculate_checksum, "
        "write_checksum as w; p = Path(sys.argv[1]); w(p, calculate_checksum(p))"
    )
    generate = (
        f"sl-worker generate -q --storage-root {root} --project {project} --animal $a --session $d "
        "--planes 1 --size-kb 1"
    )
    server.run(
        f"source {env}/bin/activate && for a in A1 A2; do for d in {' '.join(DAYS)}; do {generate}; done; "
        "done"
        f" && rm {raw}/behavior_data/runtime* && python -c {shlex.quote(fix)} {raw}",
        check=True,
    )


def test_lab_daily_over_six_sessions_one_failing_then_pending_picks_only_it(
    server: Server, workflow_project: str, capsys: pytest.CaptureFixture[str]
) -> None:
    project = workflow_project
    broken = f"{project}/A2/{DAYS[1]}"
    _generate(server, project, broken)
    argv = ["--workflow", "lab-daily", f"{project}/*/*", "--server", "wf"]
    code = process.main([*argv, "--json", "--poll-interval", "0.5"])
    result = json.loads(capsys.readouterr().out)
    assert code == 1, result
    by_session = {s["session"]: s for s in result["sessions"]}
    assert len(by_session) == 6
    stopped = by_session[broken]
    assert stopped["outcome"] == "stopped" and stopped["reason"] == "behavior failed"
    statuses = {name: p["status"] for name, p in stopped["pipelines"].items()}
    assert statuses == {
        "checksum": "SUCCEEDED",
        "preparation": "SUCCEEDED",
        "behavior": "FAILED",
        "suite2p": "SUCCEEDED",
        "video": "SUCCEEDED",
    }, "its parallel siblings finish; archiving is never submitted"
    assert not server.exists(server.storage_root / broken / "tracking_data" / "data_archiving_tracker.yaml")
    assert server.exists(server.working_root / broken / "processed_data"), "not archived: the work stays"
    for name, session in by_session.items():
        assert not server.exists(server.storage_root / name / "tracking_data" / "workflow"), "lock released"
        if name == broken:
            continue
        assert session["outcome"] == "done"
        assert {p["status"] for p in session["pipelines"].values()} == {"SUCCEEDED"}
        assert server.exists(server.storage_root / name / "processed_data.xxh128"), "archived, verified"
        assert not server.exists(server.working_root / name / "processed_data")
    assert [m["status"] for m in result["manifest"]] == ["SUCCEEDED"]
    manifest = server.read_text(server.storage_root / project / "manifest.csv")
    assert manifest is not None
    rows = [line.split(",") for line in manifest.splitlines()]
    table = {f"{project}/{r[0]}/{r[1]}": dict(zip(rows[0], r, strict=True)) for r in rows[1:]}
    assert table[broken]["behavior"] == "failed" and table[broken]["archiving"] == "idle"
    assert sum(1 for r in table.values() if r["archiving"] == "succeeded") == 5

    assert tracker.main(["--server", "wf", "status", f"{project}/*/*", "--json"]) == 0
    status = {row["session"]: row["pipelines"] for row in json.loads(capsys.readouterr().out)}
    assert status[broken]["behavior"]["status"] == "failed"
    assert [s for s, p in status.items() if p["archiving"]["status"] == "complete"] == sorted(
        set(by_session) - {broken}
    )

    assert process.main([*argv, "--pending", "--dry-run"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "1 sessions chosen, 5 left out" in out
    assert broken in out
    assert "[behavior, (suite2p: complete), (video: complete)] → archiving" in out


def test_a_session_locked_on_the_server_by_another_workflow_is_left_out_until_unlocked(
    server: Server, workflow_project: str, capsys: pytest.CaptureFixture[str]
) -> None:
    project = workflow_project
    env = shlex.quote(server.environment.value)
    server.run(
        f"source {env}/bin/activate && sl-worker generate -q --storage-root {server.storage_root} "
        f"--project {project} --animal A1 --sessions-per-animal 2 --planes 1 --size-kb 1",
        check=True,
    )
    first, second = (f"{project}/A1/{day}" for day in DAYS[:2])
    paths = SessionPaths(server.storage_root, server.working_root, *first.split("/"))
    other = Holder(
        "other-run", "ana", "lab-pc-9", 4242, 3600.0, (("workflow", "other-run"), ("started", "t0"))
    )
    assert take_locks(server, [(first, paths)], other) == ([first], [])

    argv = ["--workflow", "quick", f"{project}/*/*", "--server", "wf", "--json", "--poll-interval", "0.5"]
    assert process.main(argv) == 1
    result = json.loads(capsys.readouterr().out)
    (refused,) = result["refused"]
    assert refused["session"] == first
    assert "workflow run other-run (pid 4242 of ana on lab-pc-9, started t0" in refused["locked_by"]
    assert [(s["session"], s["outcome"]) for s in result["sessions"]] == [(second, "done")]
    (forging,) = result["dataset"]
    assert forging["session"] == second and forging["status"] == "SUCCEEDED"
    assert server.read_text(lock_path(paths)) == other.text(), "another run's lock stays as it was"

    assert tracker.main(["--server", "wf", "unlock", first, "--yes"]) == 0
    assert "held by workflow run other-run" in capsys.readouterr().out
    assert not server.exists(lock_path(paths))
