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

from sl_pipelines.core.arrays import Submission, plan_stage
from sl_pipelines.core.job import Job, Resources
from sl_pipelines.core.probe import (
    RENEW_EVERY,
    KnownTrackers,
    LeaseRenewals,
    build_probe,
    parse_probe_output,
)
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

    def run(self, command: str, data: bytes, shell: str = "sh") -> str:
        """Runs a command line as sshd does: ``<login shell> -c <command line>`` (sh here is dash)."""
        env = {"PATH": f"{self.bin}:/usr/bin:/bin", "FAKE_SLURM_DIR": str(self.state)}
        done = subprocess.run([shell, "-c", command], input=data, capture_output=True, env=env, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout.decode()

    def probe(
        self, request: ProbeRequest, mode: AccountingMode = AccountingMode.SACCT, *, login_bash: bool = False
    ) -> ProbeResult:
        command, data = build_probe(request, mode, login_bash=login_bash)
        output = self.run(command, data, "bash" if login_bash else "sh")
        return parse_probe_output(output, request)

    def submit(self, submissions: list[Submission], writer: bool | None = None) -> SubmissionReport:
        command, data = build_submit(submissions, writer=writer)
        return classify_submission(self.run(command, data), submissions, completed=True)


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


def test_a_thousand_pipelines_fit_one_small_command_and_squeue_is_asked_once(cluster: FakeCluster) -> None:
    ids = [str(1000 + i) for i in range(7000)]
    others = [f"{9000 + i}|PENDING|Held|other-{i}" for i in range(50)]  # the user's jobs of other runs
    cluster.set_live(*(f"{i}|RUNNING|None|slp-x-1-{i}" for i in ids), *others)
    trackers = tuple(PurePosixPath(f"/nowhere/s{i}/tracker.yaml") for i in range(1000))
    request = ProbeRequest(job_ids=tuple(ids), tracker_paths=trackers)
    command, data = build_probe(request, AccountingMode.SACCT)
    one, _ = build_probe(ProbeRequest(job_ids=("1",), tracker_paths=trackers[:1]), AccountingMode.SACCT)
    assert command == one and len(data) > 50_000  # the request travels on stdin: the command is fixed
    assert len(command) < 10_000  # ~8 kB of program, far below sshd's and the kernel's limits
    result = cluster.probe(request)
    assert result.slurm_answered
    assert set(states(result).values()) == {JobState.RUNNING} and len(result.jobs) == 7000
    assert all(result.trackers[path] is None for path in trackers)
    # more ids than one call takes (400): ONE listing of the user's jobs, the rows asked for kept
    (squeue,) = cluster.calls("squeue")
    assert " -j " not in squeue and f"-u {pwd.getpwuid(os.getuid()).pw_name}" in squeue
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
    # the failure's exit code comes from slurmctld (scontrol), which has it before slurmdbd (sacct) does
    assert next(s for s in result.jobs if s.job_id == "12").exit_code == 3
    (sacct,) = cluster.calls("sacct")
    assert sacct.endswith("-j 13,14")
    assert [c.split()[-1] for c in cluster.calls("scontrol")] == ["12"]


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


@pytest.mark.parametrize("tasks", [3, 40, 450], ids=["by-id", "by-id-awk", "one-listing"])
def test_array_tasks_are_found_by_task_id_and_an_ended_one_is_asked_about(
    cluster: FakeCluster, tasks: int
) -> None:
    live = [f"700_{k}|RUNNING|None|slp-t-a1" for k in range(tasks)]
    live[1] = "700_1|FAILED|NonZeroExitCode|slp-t-a1"
    others = [f"800_{k}|PENDING|Held|other" for k in range(5)]
    cluster.set_live(*live, *others)
    wanted = (*(f"700_{k}" for k in range(tasks)), "701")
    result = cluster.probe(ProbeRequest(job_ids=wanted, job_names=("slp-t-a1", "slp-t-gone")))
    found = states(result)
    assert found["700_1"] is JobState.FAILED and found["700_0"] is JobState.RUNNING
    assert found["701"] is JobState.NOT_FOUND and not any(i.startswith("800_") for i in found)
    assert [c.split()[-1] for c in cluster.calls("scontrol")] == ["700_1"]
    (sacct_ids, sacct_names) = cluster.calls("sacct")
    assert sacct_ids.endswith("-j 701") and "--name=slp-t-gone" in sacct_names  # only what squeue lacks


@pytest.mark.parametrize("size", [3, 3000], ids=["small", "big"])
def test_a_request_cut_short_is_a_failed_query_never_no_job(cluster: FakeCluster, size: int) -> None:
    ids = tuple(str(3000 + i) for i in range(size))
    path = PurePosixPath("/nowhere/t.yaml")
    request = ProbeRequest(job_ids=ids, tracker_paths=(path,))
    command, data = build_probe(request, AccountingMode.SACCT)
    result = parse_probe_output(cluster.run(command, data[: len(data) // 2]), request)
    assert not result.slurm_answered and "cut short" in result.slurm_problems[0]
    assert set(states(result).values()) == {JobState.UNKNOWN} and path in result.unreadable
    assert cluster.calls("squeue") == []


@pytest.mark.parametrize("size", [2, 3000], ids=["small", "big"])
def test_a_request_read_from_a_file_is_read_once(cluster: FakeCluster, tmp_path: Path, size: int) -> None:
    ids = tuple(str(5000 + i) for i in range(size))
    cluster.set_live(*(f"{i}|RUNNING|None|n{i}" for i in ids))
    request = ProbeRequest(job_ids=ids)
    command, data = build_probe(request, AccountingMode.SACCT)
    (tmp_path / "request").write_bytes(data)
    env = {"PATH": f"{cluster.bin}:/usr/bin:/bin", "FAKE_SLURM_DIR": str(cluster.state)}
    with (tmp_path / "request").open("rb") as stdin:  # a file, not a pipe: /dev/stdin would reopen it
        done = subprocess.run(["sh", "-c", command], stdin=stdin, capture_output=True, env=env, check=True)
    result = parse_probe_output(done.stdout.decode(), request)
    assert result.slurm_answered and set(states(result).values()) == {JobState.RUNNING}


def test_a_controller_that_does_not_answer_the_one_listing_for_many_ids_is_a_failed_query(
    cluster: FakeCluster,
) -> None:
    ids = tuple(str(2000 + i) for i in range(500))
    cluster.set_live(*(f"{i}|RUNNING|None|n{i}" for i in ids))
    cluster.go_down()
    result = cluster.probe(ProbeRequest(job_ids=ids))
    assert not result.slurm_answered
    assert "Unable to contact slurm controller" in " ".join(result.slurm_problems)
    assert set(states(result).values()) == {JobState.UNKNOWN}


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


@pytest.mark.parametrize("count", [20, 3], ids=["python", "bash"])
def test_a_tracker_whose_bytes_did_not_change_is_not_sent_again(
    cluster: FakeCluster, tmp_path: Path, count: int
) -> None:
    trackers = [tmp_path / f"s{i}.yaml" for i in range(count)]
    for path in trackers:
        path.write_text(f"status: running\nsession: {path.stem}\n")
    paths = tuple(PurePosixPath(p) for p in trackers)
    request, known = ProbeRequest(tracker_paths=paths), KnownTrackers()

    def probe() -> tuple[str, ProbeResult]:
        command, data = build_probe(request, AccountingMode.SACCT, known.digests())
        output = cluster.run(command, data)
        result = parse_probe_output(output, request, known.texts())
        known.update(result.trackers)
        return output, result

    _, first = probe()
    assert first.trackers == {p: t.read_text() for p, t in zip(paths, trackers, strict=True)}
    output, again = probe()
    sent = output.count("@@SLP@@ end 0") + output.count("@@SLP@@ end raw")
    assert sent == (0 if count > 16 else count)  # past 16 trackers one python3 compares digests
    assert again.trackers == first.trackers
    assert count <= 16 or all(again.trackers[p] is first.trackers[p] for p in paths)  # held, not copies
    trackers[1].write_text(trackers[1].read_text().replace("running", "failed!"))  # same size
    trackers[2].unlink()
    output, changed = probe()
    assert changed.trackers[paths[1]] == "status: failed!\nsession: s1\n"
    assert changed.trackers[paths[2]] is None
    assert output.count("@@SLP@@ end 0") + output.count("@@SLP@@ end raw") == (1 if count > 16 else count - 1)
    trackers[2].write_text("status: idle\n")  # back after it was gone: sent, not "same"
    assert probe()[1].trackers[paths[2]] == "status: idle\n"


PLAIN = {
    "yaml": "status: running\njobs:\n  a: 1\n",
    "no final newline": "status: idle",
    "empty": "",
    "tabs and blank lines": "a:\tb\n\n\n  c: d\n\n",
    "marker-like lines": "@@SLP@@ end 0\n|pipe|\n@@SLP@@ begin file 0\n",
    "only a newline": "\n",
}
ENCODED = {
    "non-ascii": "session: caf\u00e9\n",
    "carriage return": "a: 1\r\nb: 2\r\n",
    "a NUL inside": "a: 1\n\0\0\0\0b: 2\n",
    "only NULs": "\0" * 64,
    "escape": "a: \x1b[31m\n",
}


@pytest.mark.parametrize("login_bash", [False, True], ids=["sh", "login-bash"])
@pytest.mark.parametrize("name", [*PLAIN, *ENCODED])
def test_files_come_back_exactly_plain_text_without_base64(
    cluster: FakeCluster, tmp_path: Path, name: str, login_bash: bool
) -> None:
    text = PLAIN.get(name, ENCODED.get(name, ""))
    tracker = tmp_path / "t.yaml"
    tracker.write_bytes(text.encode())
    request = ProbeRequest(tracker_paths=(PurePosixPath(tracker),))
    command, data = build_probe(request, AccountingMode.SACCT, login_bash=login_bash)
    output = cluster.run(command, data, "bash" if login_bash else "sh")
    assert parse_probe_output(output, request).trackers == {PurePosixPath(tracker): text}
    # plain text travels as it is (no base64 process); anything else through base64
    ends = [line for line in output.splitlines() if line.startswith("@@SLP@@ end")]
    assert ends == ["@@SLP@@ end raw" if name in PLAIN else "@@SLP@@ end 0"]


def test_a_plain_file_garbled_on_the_way_is_unreadable_never_a_shorter_text() -> None:
    path = PurePosixPath("/s/t.yaml")
    request = ProbeRequest(tracker_paths=(path,))
    garbled = parse_probe_output("@@SLP@@ begin file 0\n|status: idle\nstray\n@@SLP@@ end raw\n", request)
    assert "garbled" in garbled.unreadable[path] and path not in garbled.trackers
    whole = parse_probe_output("@@SLP@@ begin file 0\n|status: idle\n|\n@@SLP@@ end raw\n", request)
    assert whole.trackers == {path: "status: idle\n"}


def test_a_login_shell_that_is_bash_runs_the_program_itself_whatever_its_rc_file_set(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    cluster.set_live("61|RUNNING|None|a", "62|FAILED|NonZeroExitCode|b")
    cluster.set_accounting("63|COMPLETED|0:0|None|c")
    tracker = tmp_path / "t.yaml"
    tracker.write_text("status: running\n")
    lease = tmp_path / "lease"
    lease.write_text("me\n")
    request = ProbeRequest(
        job_ids=("61", "62", "63"),
        job_names=("b", "gone"),
        tracker_paths=(PurePosixPath(tracker),),
        leases=((PurePosixPath(lease), "me"),),
    )
    command, data = build_probe(request, AccountingMode.SACCT, login_bash=True)
    assert not command.startswith("bash -c")  # no second bash
    wrapped, _ = build_probe(request, AccountingMode.SACCT)
    expected = parse_probe_output(cluster.run(wrapped, data), request)
    # what a ~/.bashrc might leave behind: another IFS, nounset, pipefail, aliases
    rc = "IFS=,; set -u -o pipefail; shopt -s expand_aliases; alias squeue=false\n"
    for prefix in ("", rc):
        result = parse_probe_output(cluster.run(prefix + command, data, "bash"), request)
        assert result == expected
    assert states(expected) == {"61": JobState.RUNNING, "62": JobState.FAILED, "63": JobState.COMPLETED}
    assert expected.trackers == {PurePosixPath(tracker): "status: running\n"} and expected.slurm_answered


def test_an_unchanged_answer_for_a_text_not_held_is_unreadable_never_missing() -> None:
    path = PurePosixPath("/s/t.yaml")
    request = ProbeRequest(tracker_paths=(path,))
    output = "@@SLP@@ begin file 0\n@@SLP@@ end same\n"
    assert "unchanged" in parse_probe_output(output, request).unreadable[path]
    assert parse_probe_output(output, request, {path: "status: idle\n"}).trackers == {path: "status: idle\n"}


def test_a_tracker_that_cannot_be_read_is_reported_not_raised() -> None:
    path = PurePosixPath("/s/t.yaml")
    request = ProbeRequest(tracker_paths=(path,))
    output = "@@SLP@@ begin file 0\nbase64: /s/t.yaml: Permission denied\n@@SLP@@ end 1\n"
    result = parse_probe_output(output, request)
    assert "Permission denied" in result.unreadable[path] and path not in result.trackers
    cut = parse_probe_output("@@SLP@@ begin file 0\nAAA\n", request)
    assert "cut off" in cut.unreadable[path]


# ----------------------------------------------------------------------------------------- submission


def job(folder: Path, name: str, text: str = "ok", **changes: object) -> Job:
    """A job whose command echoes ``text`` (the fake sbatch refuses scripts saying REFUSE or TIMEOUT)."""
    return Job(name, PurePosixPath(folder / "run" / name), (("echo", text),), **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("writer", [False, True], ids=["bash", "python3"])
def test_submission_writes_every_script_exactly_and_returns_every_id(
    cluster: FakeCluster, tmp_path: Path, writer: bool
) -> None:
    jobs = [job(tmp_path, f"j{i}", f"it's $HOME \\\n{i}\n\n") for i in range(3)]
    report = cluster.submit([Submission(j) for j in jobs], writer)
    assert sorted(report.submitted) == ["j0", "j1", "j2"]
    assert sorted(report.submitted.values()) == ["100", "101", "102"]  # sbatch runs in parallel
    assert not (report.refused or report.deferred or report.unknown)
    for j in jobs:
        assert Path(j.script_path).read_text() == j.render()


@pytest.mark.parametrize("writer", [False, True], ids=["bash", "python3"])
def test_an_array_runs_each_tasks_own_script_and_logs_into_its_folder(
    cluster: FakeCluster, tmp_path: Path, writer: bool
) -> None:
    members = [(0, job(tmp_path, "plane-0", "zero")), (2, job(tmp_path, "plane-2", "two"))]
    (single,) = plan_stage(
        members[:1], name="slp-t-2", folder=PurePosixPath(tmp_path / "run"), max_array_size=10
    )
    assert not single.is_array  # a group of one is a plain job
    (array,) = plan_stage(members, name="slp-t-2", folder=PurePosixPath(tmp_path / "run"), max_array_size=10)
    assert array.is_array and array.job.array == "0,2" and array.job.name == "slp-t-2"
    report = cluster.submit([array], writer)
    assert report.submitted == {"plane-0": "100_0", "plane-2": "100_2"}
    for index, member in members:  # what Slurm does for task <index>: open its logs, run the array script
        logs = Path(array.job.working_directory) / str(index)
        env = {"PATH": "/usr/bin:/bin", "SLURM_ARRAY_TASK_ID": str(index)}
        with (logs / "stdout.txt").open("w") as out:
            subprocess.run(["bash", str(array.job.script_path)], env=env, stdout=out, check=True)
        assert Path(member.stdout_path).read_text() == member.commands[0][1] + "\n"


def test_positions_past_the_clusters_array_limit_go_out_as_single_jobs(tmp_path: Path) -> None:
    members = [(i, job(tmp_path, f"p{i}")) for i in range(4)]
    plan = plan_stage(members, name="slp-t-1", folder=PurePosixPath(tmp_path), max_array_size=2)
    assert [len(s.jobs) for s in plan] == [2, 1, 1] and plan[0].is_array and plan[0].job.array == "0,1"
    mixed = [
        (0, job(tmp_path, "a")),
        (1, job(tmp_path, "b", resources=Resources(cpus=2))),
        (2, job(tmp_path, "c")),
    ]
    groups = plan_stage(mixed, name="slp-t-1", folder=PurePosixPath(tmp_path), max_array_size=100)
    assert sorted(tuple(j.name for j in s.jobs) for s in groups) == [("a", "c"), ("b",)]


@pytest.mark.parametrize("writer", [False, True], ids=["bash", "python3"])
def test_a_script_that_cannot_be_written_is_refused_and_the_others_go_on(
    cluster: FakeCluster, tmp_path: Path, writer: bool
) -> None:
    (tmp_path / "file").write_text("not a folder")
    bad = Job("j0", PurePosixPath(tmp_path / "file" / "j0"), (("true",),))
    report = cluster.submit([Submission(bad), Submission(job(tmp_path, "j1"))], writer)
    assert report.submitted == {"j1": "100"}
    assert "Could not write" in report.refused["j0"] and "Not a directory" in report.refused["j0"]


def test_a_refused_job_is_refused_alone(cluster: FakeCluster, tmp_path: Path) -> None:
    jobs = [job(tmp_path, f"j{i}", "REFUSE" if i == 1 else "ok") for i in range(3)]
    report = cluster.submit([Submission(j) for j in jobs])
    assert set(report.submitted) == {"j0", "j2"}
    assert "Invalid partition" in report.refused["j1"]


def test_an_unreachable_controller_defers_the_rest_after_one_try(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    cluster.go_down()
    report = cluster.submit([Submission(job(tmp_path, f"j{i}")) for i in range(20)])
    assert set(report.deferred) == {f"j{i}" for i in range(20)} and not report.refused
    assert "Unable to contact slurm controller" in report.deferred["j0"]
    assert any("not tried" in reason for reason in report.deferred.values())
    assert len(cluster.calls("sbatch")) < 20  # no new sbatch starts once one said the controller is gone


def test_a_timed_out_sbatch_leaves_the_outcome_unknown(cluster: FakeCluster, tmp_path: Path) -> None:
    report = cluster.submit([Submission(job(tmp_path, "j0", "TIMEOUT"))])
    assert report.unknown == ("j0",)


def test_a_dropped_connection_leaves_cut_jobs_unknown(tmp_path: Path) -> None:
    submissions = [Submission(job(tmp_path, n)) for n in ("a", "b", "c")]
    output = "@@SLP@@ begin job 0\n7\n@@SLP@@ end 0\n@@SLP@@ begin job 1\n"
    report = classify_submission(output, submissions, completed=False)
    assert report.submitted == {"a": "7"} and report.unknown == ("b", "c")


@pytest.mark.parametrize("count", [3, 250], ids=["touch", "xargs"])
def test_the_probe_renews_the_leases_it_holds_and_names_the_holder_of_a_lost_one(
    cluster: FakeCluster, tmp_path: Path, count: int
) -> None:
    paths = [tmp_path / f"run{i}" / "lease" for i in range(count)]
    for path in paths:
        path.parent.mkdir()
        path.write_text("mine\nuser host pid\n")
        os.utime(path, (1_000_000, 1_000_000))
    paths[1].write_text("theirs\n")
    os.utime(paths[1], (1_000_000, 1_000_000))
    gone = tmp_path / "gone" / "lease"
    leases = tuple((PurePosixPath(p), "mine") for p in [*paths, gone])
    result = cluster.probe(ProbeRequest(leases=leases))
    assert result.lost_leases == {PurePosixPath(paths[1]): "theirs", PurePosixPath(gone): ""}
    renewed = [p for p in paths if p.stat().st_mtime > 1_000_000]
    assert renewed == [p for i, p in enumerate(paths) if i != 1]  # only the leases it holds
    assert not gone.exists()  # touch -c: a missing lease is not made
    for path in paths:
        os.utime(path, (1_000_000, 1_000_000))
    command, data = build_probe(ProbeRequest(leases=leases), AccountingMode.SACCT, renew=set())
    checked = parse_probe_output(cluster.run(command, data), ProbeRequest(leases=leases))
    assert checked.lost_leases == result.lost_leases  # not due for renewal: still checked
    assert all(p.stat().st_mtime == 1_000_000 for p in paths)  # but not touched


def test_a_lease_is_renewed_every_so_often_and_only_once_the_server_confirms_it() -> None:
    renewals, path, other = LeaseRenewals(), PurePosixPath("/w/a/lease"), PurePosixPath("/w/b/lease")
    request = ProbeRequest(leases=((path, "me"), (other, "me")))
    assert renewals.due(request, 100.0) == {path, other}
    done = "@@SLP@@ begin leases\nlost 1 them\n@@SLP@@ end 0\n"
    renewals.renewed({path, other}, done, parse_probe_output(done, request), 100.0)
    assert renewals.due(request, 100.0 + RENEW_EVERY - 1) == {other}  # a lost lease is not renewed
    assert renewals.due(request, 100.0 + RENEW_EVERY) == {path, other}
    cut = "@@SLP@@ begin leases\n"
    renewals.renewed({other}, cut, parse_probe_output(cut, request), 200.0)
    assert other in renewals.due(request, 201.0)  # the answer was cut off: not known to be renewed
