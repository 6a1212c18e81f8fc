"""The probe and submission programs, run in real bash against a stand-in Slurm (``fake_slurm.py``).

What the real cluster does is covered by the integration tests; these pin down the programs' own logic:
the request travels on stdin whatever its size, squeue is asked by id, the accounting source only for
what squeue no longer shows, a query that fails is reported as failed, and a submission sorts every job.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

from sl_pipelines.core.probe import build_probe, parse_probe_output
from sl_pipelines.core.sbatch import build_submit, classify_submission
from sl_pipelines.core.seams import ProbeRequest, ProbeResult, SubmissionReport
from sl_pipelines.core.slurm import AccountingMode
from sl_pipelines.core.states import JobState

FAKE = Path(__file__).with_name("fake_slurm.py")


@dataclass
class FakeCluster:
    """A folder of stand-in Slurm commands and their state."""

    state: Path
    bin: Path

    def set_live(self, *rows: str) -> None:
        (self.state / "live.txt").write_text("".join(f"{row}\n" for row in rows))

    def set_accounting(self, *rows: str) -> None:
        (self.state / "acct.txt").write_text("".join(f"{row}\n" for row in rows))

    def go_down(self) -> None:
        (self.state / "down").touch()

    def calls(self, command: str = "") -> list[str]:
        log = self.state / "calls.log"
        lines = log.read_text().splitlines() if log.exists() else []
        return [line for line in lines if line.startswith(command)]

    def run(self, command: str, data: bytes) -> str:
        env = {"PATH": f"{self.bin}:/usr/bin:/bin", "FAKE_SLURM_DIR": str(self.state)}
        done = subprocess.run(["sh", "-c", command], input=data, capture_output=True, env=env, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout.decode()

    def probe(self, request: ProbeRequest, mode: AccountingMode = AccountingMode.SACCT) -> ProbeResult:
        command, data = build_probe(request, mode)
        return parse_probe_output(self.run(command, data), request)

    def submit(self, scripts: list[tuple[PurePosixPath, str]]) -> SubmissionReport:
        command, data = build_submit(scripts)
        jobs = [(path.stem, path) for path, _ in scripts]
        return classify_submission(self.run(command, data), jobs, completed=True)


@pytest.fixture
def cluster(tmp_path: Path) -> FakeCluster:
    state, folder = tmp_path / "state", tmp_path / "bin"
    state.mkdir()
    folder.mkdir()
    for name in ("squeue", "sacct", "scontrol", "sbatch"):
        wrapper = folder / name
        wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {FAKE} {name} "$@"\n')
        wrapper.chmod(0o755)
    return FakeCluster(state, folder)


def states(result: ProbeResult) -> dict[str, JobState]:
    return {s.job_id: s.state for s in result.jobs}


# ----------------------------------------------------------------------------------------- probe


def test_a_thousand_pipelines_fit_one_small_command_and_squeue_is_asked_by_id(cluster: FakeCluster) -> None:
    ids = [str(1000 + i) for i in range(7000)]
    cluster.set_live(*(f"{i}|RUNNING|None|slp-x-1-{i}" for i in ids))
    trackers = tuple(PurePosixPath(f"/nowhere/s{i}/tracker.yaml") for i in range(1000))
    request = ProbeRequest(job_ids=tuple(ids), tracker_paths=trackers)
    command, data = build_probe(request, AccountingMode.SACCT)
    assert len(command) < 5000 and len(data) > 50_000  # the request travels on stdin
    result = cluster.probe(request)
    assert result.slurm_answered
    assert set(states(result).values()) == {JobState.RUNNING} and len(result.jobs) == 7000
    assert all(result.trackers[path] is None for path in trackers)
    squeue_calls = cluster.calls("squeue")
    assert len(squeue_calls) == 18 and all(" -j " in call for call in squeue_calls)  # 400 ids a call
    assert cluster.calls("sacct") == []  # everything squeue shows needs no accounting query


def test_only_what_squeue_no_longer_shows_goes_to_sacct(cluster: FakeCluster) -> None:
    cluster.set_live("11|RUNNING|None|a", "12|FAILED|NonZeroExitCode|b")
    cluster.set_accounting("12|FAILED|3:0|NonZeroExitCode|b", "13|COMPLETED|0:0|None|c")
    result = cluster.probe(ProbeRequest(job_ids=("11", "12", "13", "14")))
    assert states(result) == {
        "11": JobState.RUNNING,
        "12": JobState.FAILED,
        "13": JobState.COMPLETED,
        "14": JobState.NOT_FOUND,
    }
    assert next(s for s in result.jobs if s.job_id == "12").exit_code == 3  # the failure's exit code
    (sacct,) = cluster.calls("sacct")
    assert sacct.endswith("-j 12,13,14")


def test_names_are_looked_up_among_the_users_jobs_only_when_asked(cluster: FakeCluster) -> None:
    cluster.set_live("21|PENDING|Priority|slp-t-2-a")
    cluster.set_accounting("22|COMPLETED|0:0|None|slp-t-2-b")
    result = cluster.probe(ProbeRequest(job_names=("slp-t-2-a", "slp-t-2-b", "slp-t-2-c")))
    assert {s.name: s.state for s in result.jobs} == {
        "slp-t-2-a": JobState.PENDING,
        "slp-t-2-b": JobState.COMPLETED,
    }
    (squeue,) = cluster.calls("squeue")
    me = f"-u {pwd.getpwuid(os.getuid()).pw_name} "
    assert me in squeue and "--name=slp-t-2-a,slp-t-2-b,slp-t-2-c" in squeue
    (sacct,) = cluster.calls("sacct")
    assert "--name=slp-t-2-b,slp-t-2-c" in sacct and me in sacct


def test_without_accounting_scontrol_is_asked_per_missing_or_failed_id(cluster: FakeCluster) -> None:
    cluster.set_live("31|COMPLETED|None|a", "32|FAILED|NonZeroExitCode|b")
    result = cluster.probe(ProbeRequest(job_ids=("31", "32", "33")), AccountingMode.SCONTROL)
    assert states(result) == {"31": JobState.COMPLETED, "32": JobState.FAILED, "33": JobState.NOT_FOUND}
    assert result.slurm_answered  # "Invalid job id" is an answer
    assert [c.split()[-1] for c in cluster.calls("scontrol")] == ["32", "33"]


@pytest.mark.parametrize("mode", list(AccountingMode))
def test_a_controller_that_does_not_answer_is_never_read_as_no_such_job(
    cluster: FakeCluster, mode: AccountingMode
) -> None:
    cluster.set_live("41|RUNNING|None|a")
    cluster.go_down()
    path = PurePosixPath("/nowhere/t.yaml")
    result = cluster.probe(ProbeRequest(job_ids=("41",), job_names=("n",), tracker_paths=(path,)), mode)
    assert not result.slurm_answered
    assert "Unable to contact slurm controller" in " ".join(result.slurm_problems)
    assert states(result) == {"41": JobState.UNKNOWN}
    assert result.trackers == {path: None}  # the trackers are still read


def test_tracker_texts_come_back_exactly_and_hostile_paths_stay_paths(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    folder = tmp_path / "a b;$(touch pwned)"
    folder.mkdir()
    tracker = folder / "t.yaml"
    text = "status: running\n@@SLP@@ end 0\nunicode: é\n"
    tracker.write_text(text)
    (tmp_path / "dir.yaml").mkdir()
    paths = (PurePosixPath(tracker), PurePosixPath(tmp_path / "dir.yaml"))
    result = cluster.probe(ProbeRequest(tracker_paths=paths))
    assert result.trackers == {paths[0]: text, paths[1]: None}
    assert not (tmp_path / "pwned").exists()


def test_a_tracker_that_cannot_be_read_is_reported_not_raised() -> None:
    path = PurePosixPath("/s/t.yaml")
    request = ProbeRequest(tracker_paths=(path,))
    output = "@@SLP@@ begin file 0\nbase64: /s/t.yaml: Permission denied\n@@SLP@@ end 1\n"
    result = parse_probe_output(output, request)
    assert "Permission denied" in result.unreadable[path] and path not in result.trackers
    cut = parse_probe_output("@@SLP@@ begin file 0\nAAA\n", request)
    assert "cut off" in cut.unreadable[path]


# ----------------------------------------------------------------------------------------- submission


def test_submission_writes_every_script_exactly_and_returns_every_id(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    scripts = [
        (
            PurePosixPath(tmp_path / f"jobs/run/j{i}/j{i}.sh"),
            f"#!/bin/bash\necho 'it''s $HOME' \\\\\n\n{i}\n\n",
        )
        for i in range(3)
    ]
    report = cluster.submit(scripts)
    assert report.submitted == {"j0": "100", "j1": "101", "j2": "102"}
    assert not (report.refused or report.deferred or report.unknown)
    for path, text in scripts:
        assert Path(path).read_text() == text


def test_a_script_that_cannot_be_written_is_refused_and_the_others_go_on(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("not a folder")
    scripts = [
        (PurePosixPath(tmp_path / "file/j0/j0.sh"), "#!/bin/bash\n"),
        (PurePosixPath(tmp_path / "ok/j1/j1.sh"), "#!/bin/bash\n"),
    ]
    report = cluster.submit(scripts)
    assert report.submitted == {"j1": "100"}
    assert "Could not write job script" in report.refused["j0"] and "Not a directory" in report.refused["j0"]


def test_a_refused_job_is_refused_alone(cluster: FakeCluster, tmp_path: Path) -> None:
    scripts = [
        (PurePosixPath(tmp_path / f"j{i}/j{i}.sh"), "REFUSE\n" if i == 1 else "ok\n") for i in range(3)
    ]
    report = cluster.submit(scripts)
    assert report.submitted == {"j0": "100", "j2": "101"}
    assert "Invalid partition" in report.refused["j1"]


def test_an_unreachable_controller_defers_the_rest_after_one_try(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    cluster.go_down()
    scripts = [(PurePosixPath(tmp_path / f"j{i}/j{i}.sh"), "ok\n") for i in range(4)]
    report = cluster.submit(scripts)
    assert set(report.deferred) == {"j0", "j1", "j2", "j3"} and not report.refused
    assert "Unable to contact slurm controller" in report.deferred["j0"]
    assert "not tried" in report.deferred["j3"]
    assert len(cluster.calls("sbatch")) == 1


def test_a_timed_out_sbatch_leaves_the_outcome_unknown(cluster: FakeCluster, tmp_path: Path) -> None:
    scripts = [
        (PurePosixPath(tmp_path / "j0/j0.sh"), "TIMEOUT\n"),
        (PurePosixPath(tmp_path / "j1/j1.sh"), "x"),
    ]
    report = cluster.submit(scripts)
    assert report.unknown == ("j0",)
    assert set(report.deferred) == {"j1"}


def test_a_dropped_connection_leaves_cut_jobs_unknown() -> None:
    jobs = [("a", PurePosixPath("/a.sh")), ("b", PurePosixPath("/b.sh")), ("c", PurePosixPath("/c.sh"))]
    output = "@@SLP@@ begin job 0\n7\n@@SLP@@ end 0\n@@SLP@@ begin job 1\n"
    report = classify_submission(output, jobs, completed=False)
    assert report.submitted == {"a": "7"} and report.unknown == ("b", "c")
