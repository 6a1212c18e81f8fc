"""Slurm output parsers, with outputs captured from the real testbed (22.05)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sl_pipelines.core.framing import MARKER, split_sections
from sl_pipelines.core.sbatch import parse_sbatch_output
from sl_pipelines.core.slurm import parse_status_output
from sl_pipelines.core.states import JobState, JobStatus
from sl_pipelines.errors import SubmissionError

OUTPUTS = Path(__file__).parent / "slurm_outputs"
S, CD, F, CA, PD, TO, OOM, NF, UNK, NOT = (
    JobState.RUNNING,
    JobState.COMPLETED,
    JobState.FAILED,
    JobState.CANCELLED,
    JobState.PENDING,
    JobState.TIMEOUT,
    JobState.OUT_OF_MEMORY,
    JobState.NODE_FAIL,
    JobState.UNKNOWN,
    JobState.NOT_FOUND,
)


def framed(name: str, body: str, status: str = "0") -> str:
    return f"{MARKER} begin {name}\n{body}{MARKER} end {status}\n"


# ----------------------------------------------------------------------------------------- sbatch


@pytest.mark.parametrize(
    ("output", "job_id"),
    [
        ("1010\n", "1010"),
        ("1010;slacct\n", "1010"),
        ("Welcome to the cluster!\nPlease cite us.\n4242;cluster-b\n", "4242"),
        ("sbatch: warning: no memory given, using default\n77\n", "77"),
        ("Submitted batch job 123456\n", "123456"),
        ("  999  \n", "999"),
    ],
)
def test_sbatch_output_gives_the_job_id(output: str, job_id: str) -> None:
    assert parse_sbatch_output(output, "job") == job_id


@pytest.mark.parametrize(
    "output",
    [
        "",
        "sbatch: error: invalid partition specified: nope\n",
        "sbatch: error: Batch job submission failed: 12\n",
    ],
)
def test_sbatch_output_without_id_raises(output: str) -> None:
    with pytest.raises(SubmissionError) as caught:
        parse_sbatch_output(output, "plane-3")
    assert caught.value.job_name == "plane-3"
    assert "plane-3" in str(caught.value)


# ----------------------------------------------------------------------------------------- status


@pytest.mark.parametrize(
    ("cluster", "expected"),
    [
        (
            "acct",
            {
                "1010": (CD, 0, ""),
                "1011": (F, 3, ""),
                "1012": (CA, 0, "by 1001"),
                "1013": (F, 4, "task 1013_2"),
                "1014": (PD, None, "BeginTime"),  # requeued: sacct's old REQUEUED row loses to the live one
                "1015": (F, 0, "signal 9"),
                "99999": (NOT, None, ""),
                "1013_2": (F, 4, ""),
            },
        ),
        (
            "noacct",
            {
                "500026": (CD, 0, ""),
                "500027": (F, 3, "NonZeroExitCode"),
                "500028": (CA, 0, "signal 15"),
                "500029": (F, 4, "task 500029_2"),
                "500030": (PD, None, "BeginTime"),
                "500031": (F, 0, "JobLaunchFailure, signal 9"),
                "99999": (NOT, None, ""),
                "500029_1": (CD, 0, ""),
            },
        ),
    ],
)
def test_real_testbed_outputs(cluster: str, expected: dict[str, tuple[JobState, int | None, str]]) -> None:
    text = (OUTPUTS / f"status_{cluster}.txt").read_text()
    ids = [key for key in expected if "_" not in key]
    statuses, problems = parse_status_output(text, job_ids=ids, job_names=["cap-ok", "cap|pipe name"])
    found = {s.job_id: s for s in statuses}
    assert problems == ()
    for job_id, (state, exit_code, reason) in expected.items():
        assert (found[job_id].state, found[job_id].exit_code, found[job_id].reason) == (
            state,
            exit_code,
            reason,
        ), job_id
    assert found["1014" if cluster == "acct" else "500030"].name == "cap|pipe name"


SQUEUE_RUNNING = framed("squeue-ids", "7|RUNNING|None|run-a\n8|PENDING|Resources|run-b\n")
ROWS = [
    # (name, output, ids, {id: (state, exit, reason)})
    ("live only", SQUEUE_RUNNING, ["7", "8"], {"7": (S, None, ""), "8": (PD, None, "Resources")}),
    (
        "sacct terminal beats squeue",
        SQUEUE_RUNNING
        + framed("sacct-ids", "7|TIMEOUT|0:15|TimeLimit|run-a\n8|PENDING|0:0|Resources|run-b\n"),
        ["7", "8"],
        {"7": (TO, 0, "TimeLimit, signal 15"), "8": (PD, None, "Resources")},
    ),
    (
        "out of memory and node failure",
        framed("sacct-ids", "9|OUT_OF_MEMORY|0:125|None|m\n10|NODE_FAIL|1:0|None|n\n"),
        ["9", "10"],
        {"9": (OOM, 0, "signal 125"), "10": (NF, 1, "")},
    ),
    (
        "requeued twice with -D: newest row wins",
        framed("sacct-ids", "11|REQUEUED|0:0|None|r\n11|NODE_FAIL|0:0|None|r\n11|RUNNING|0:0|None|r\n"),
        ["11"],
        {"11": (S, 0, "")},
    ),
    (
        "invalid job id is tolerated from squeue",
        framed("squeue-ids", "slurm_load_jobs error: Invalid job id specified\n", "1")
        + framed("sacct-ids", ""),
        ["12"],
        {"12": (NOT, None, "")},
    ),
    (
        "squeue down and no accounting answer: unknown, never not-found",
        framed("squeue-ids", "squeue: error: Unable to contact slurm controller (connect failure)\n", "1")
        + framed("scontrol", "slurm_load_jobs error: Unable to contact slurm controller\n", "1"),
        ["13"],
        {
            "13": (
                UNK,
                None,
                "squeue exited 1: squeue: error: Unable to contact slurm controller (connect failure); "
                "scontrol exited 1: slurm_load_jobs error: Unable to contact slurm controller",
            )
        },
    ),
    (
        "sacct disabled",
        framed("squeue-ids", "") + framed("sacct-ids", "Slurm accounting storage is disabled\n", "1"),
        ["14"],
        {"14": (UNK, None, "sacct exited 1: Slurm accounting storage is disabled")},
    ),
    (
        "cut-off output",
        f"{MARKER} begin squeue-ids\n15|RUNNING|None|x\n",
        ["15", "16"],
        {"15": (S, None, ""), "16": (UNK, None, "squeue-ids output was cut off")},
    ),
    (
        "garbled state",
        framed("sacct-ids", "17|EXPLODED|0:0|None|x\n18|COMPLETED|zero|None|y\n"),
        ["17", "18"],
        {"17": (UNK, 0, "Slurm state 'EXPLODED'"), "18": (UNK, None, "unreadable exit code 'zero'")},
    ),
    (
        "pending array",
        framed(
            "squeue-ids", "20_[3-5]|PENDING|Resources|arr\n20_1|RUNNING|None|arr\n20_2|COMPLETED|None|arr\n"
        ),
        ["20"],
        {
            "20": (S, None, "task 20_1"),
            "20_[3-5]": (PD, None, "Resources"),
            "20_1": (S, None, ""),
            "20_2": (CD, 0, ""),
        },
    ),
    (
        "scontrol array task and cancellation",
        framed(
            "scontrol",
            "JobId=31 ArrayJobId=30 ArrayTaskId=1 JobName=my arr UserId=u(1) GroupId=g(1) JobState=COMPLETED "
            "Reason=None ExitCode=0:0 RunTime=00:00:01\n"
            "JobId=32 JobName=other UserId=u(1) GroupId=g(1) JobState=CANCELLED Reason=None ExitCode=0:15\n",
        ),
        ["30", "32"],
        {"30": (CD, 0, ""), "30_1": (CD, 0, ""), "32": (CA, 0, "signal 15")},
    ),
]


@pytest.mark.parametrize(
    ("output", "ids", "expected"), [row[1:] for row in ROWS], ids=[row[0] for row in ROWS]
)
def test_status_table(
    output: str, ids: list[str], expected: dict[str, tuple[JobState, int | None, str]]
) -> None:
    statuses, problems = parse_status_output(output, job_ids=ids)
    found = {s.job_id: s for s in statuses}
    assert {key: (s.state, s.exit_code, s.reason) for key, s in found.items()} == expected
    failed = ("exited", "cut off")
    assert bool(problems) == any(
        state is UNK and any(word in reason for word in failed) for state, _, reason in expected.values()
    )


def test_scontrol_rows_of_other_jobs_are_dropped() -> None:
    text = framed(
        "scontrol",
        "JobId=40 JobName=mine UserId=u(1) JobState=RUNNING Reason=None ExitCode=0:0\n"
        "JobId=41 JobName=someone else UserId=v(2) JobState=RUNNING Reason=None ExitCode=0:0\n",
    )
    assert [s.job_id for s in parse_status_output(text, job_names=["mine"])[0]] == ["40"]


def test_requested_ids_come_first_and_once() -> None:
    text = framed("squeue-names", "50|RUNNING|None|n\n51|PENDING|None|n\n") + framed(
        "squeue-ids", "51|PENDING|None|n\n"
    )
    assert [s.job_id for s in parse_status_output(text, job_ids=["51"], job_names=["n"])[0]] == ["51", "50"]


def test_unknown_is_never_success() -> None:
    status = JobStatus("1", "x", JobState.parse("WEIRD_NEW_STATE"))
    assert status.state is UNK and not status.state.is_terminal


@pytest.mark.parametrize(
    "text", ["STOPPED", "SIGNALING", "STAGE_OUT", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SE", "RQ"]
)
def test_holding_and_finishing_states_are_active_not_unknown(text: str) -> None:
    state = JobState.parse(text)
    assert state is not UNK and state.is_active and not state.is_failure


@pytest.mark.parametrize("text", ["PREEMPTED", "NODE_FAIL"])
def test_states_after_which_slurm_may_requeue_are_not_believed_at_once(text: str) -> None:
    assert JobState.parse(text).may_requeue


def test_an_unknown_state_keeps_what_slurm_printed() -> None:
    statuses, _ = parse_status_output(framed("squeue-ids", "7|BURNING|None|x\n"), job_ids=["7"])
    assert statuses[0].state is UNK and "BURNING" in statuses[0].reason


def test_sections_split_at_markers() -> None:
    sections = split_sections("noise\n" + framed("a", "1\n2\n") + framed("b", "", "missing"))
    assert [(s.name, s.lines, s.status, s.ok) for s in sections] == [
        ("a", ("1", "2"), "0", True),
        ("b", (), "missing", False),
    ]
