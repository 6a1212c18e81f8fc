"""What jobs used: parsers of real sacct / scontrol output, units, the job's own file, the record."""

from __future__ import annotations

import base64
from pathlib import Path, PurePosixPath

import pytest

from sl_pipelines.core.framing import MARKER, split_sections
from sl_pipelines.core.probe import build_probe, parse_usage_sections
from sl_pipelines.core.seams import ProbeRequest
from sl_pipelines.core.slurm import AccountingMode
from sl_pipelines.core.usage import (
    JobFacts,
    Measured,
    duration_s,
    job_usage_text,
    memory_mb,
    parse_job_usage,
    parse_sacct_usage,
    parse_scontrol_usage,
    slurm_job_id,
    usage_record,
)
from sl_pipelines.errors import ConfigurationError

OUTPUTS = Path(__file__).parent / "slurm_outputs"


def _lines(name: str) -> list[str]:
    return [line for line in (OUTPUTS / name).read_text().splitlines() if not line.startswith("#")]


@pytest.mark.parametrize(
    ("text", "cpus", "expected"),
    [
        ("216000K", None, 210.9375),
        ("1.5G", None, 1536.0),
        ("512M", None, 512.0),
        ("600M", 2, 600.0),  # 22.05: ReqMem is the total, without a suffix
        ("4000Mc", 4, 16000.0),  # older Slurm: per CPU
        ("4000Mn", 4, 4000.0),  # older Slurm: per node
        ("2T", None, 2 * 1024 * 1024.0),
        ("1048576", None, 1.0),  # a bare number is bytes
        ("", None, None),
        ("16?", None, None),
    ],
)
def test_memory_units(text: str, cpus: int | None, expected: float | None) -> None:
    assert memory_mb(text, cpus) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("00:02.022", 2.022),
        ("01:02:03", 3723.0),
        ("1-02:00:00", 93600.0),
        ("00:07:00", 420.0),
        ("59", 59.0),
        ("UNLIMITED", None),
        ("", None),
    ],
)
def test_durations(text: str, expected: float | None) -> None:
    assert duration_s(text) == pytest.approx(expected) if expected is not None else duration_s(text) is None


def test_sacct_rows_give_the_allocation_and_the_peak_of_the_steps() -> None:
    jobs = parse_sacct_usage(_lines("usage_sacct.txt"))
    assert "1012" not in jobs, "a pending job (or one slurmdbd has not closed yet) is asked again later"
    assert jobs["1001"] == Measured(
        source="sacct",
        state="COMPLETED",
        submitted_at="2026-11-30T21:33:22",
        started_at="2026-11-30T21:33:22",
        ended_at="2026-11-30T21:33:25",
        elapsed_s=3.0,
        cpu_s=2.027,
        cpus=1,
        max_rss_mb=216000 / 1024,  # MaxRSS lives on the .batch step only
        requested_memory_mb=512.0,
        time_limit_minutes=5,
        node="slacct-n1",
    )
    task = jobs["1007_1"]
    assert (task.cpus, task.requested_memory_mb, task.max_rss_mb) == (2, 600.0, 71100 / 1024)
    assert task.time_limit_minutes is None, "UNLIMITED is no number of minutes"
    assert (jobs["1010"].state, jobs["1010"].requested_memory_mb) == ("FAILED", 2048.0)
    assert jobs["1011"].state == "CANCELLED", "'CANCELLED by 1001' keeps the state word"
    assert jobs["1011"].time_limit_minutes == 10


def test_scontrol_rows_give_times_node_and_requests() -> None:
    jobs = parse_scontrol_usage(_lines("usage_scontrol.txt"))
    assert sorted(jobs) == ["500004_1", "500005"], "an array task goes by <array>_<task>"
    task, failed = jobs["500004_1"], jobs["500005"]
    assert (task.cpus, task.requested_memory_mb, task.time_limit_minutes) == (2, 600.0, 7)
    assert (task.node, task.elapsed_s, task.source, task.cpu_s) == ("slnoacct-n1", 2.0, "job", None)
    assert (failed.state, failed.requested_memory_mb, failed.time_limit_minutes) == ("FAILED", 2048.0, 1560)
    assert (failed.submitted_at, failed.ended_at) == ("2026-11-30T21:44:17", "2026-11-30T21:44:19")


def test_the_jobs_own_file_round_trips_in_mib_and_slurm_ids() -> None:
    env = {"SLURM_JOB_ID": "77", "SLURM_CPUS_PER_TASK": "4", "SLURM_MEM_PER_NODE": "2048"}
    text = job_usage_text(
        cpu_s=2.0151,
        max_rss_kib=204800,
        started_at="a",
        ended_at="b",
        elapsed_s=3.2,
        node="n1",
        environment=env,
    )
    own = parse_job_usage(text)
    assert own == Measured(
        started_at="a", ended_at="b", elapsed_s=3.2, cpu_s=2.015, cpus=4, max_rss_mb=200.0,
        requested_memory_mb=2048.0, node="n1",
    )  # fmt: skip
    assert parse_job_usage("not json") is None and parse_job_usage("[1]") is None
    assert slurm_job_id(env) == "77"
    assert slurm_job_id({**env, "SLURM_ARRAY_JOB_ID": "70", "SLURM_ARRAY_TASK_ID": "3"}) == "70_3"
    assert slurm_job_id({}) is None


def test_slurm_figures_win_and_the_peak_is_the_larger_one() -> None:
    sacct = Measured(source="sacct", state="COMPLETED", cpu_s=2.0, max_rss_mb=150.0, node="n1")
    own = Measured(cpu_s=1.9, max_rss_mb=201.0, node="other", cpus=1, elapsed_s=3.0)
    merged = sacct.filled_from(own)
    assert (merged.source, merged.cpu_s, merged.node, merged.max_rss_mb) == ("sacct", 2.0, "n1", 201.0)
    assert (merged.cpus, merged.elapsed_s) == (1, 3.0), "what sacct lacks comes from the job"
    assert Measured(source="sacct", max_rss_mb=None).filled_from(own).max_rss_mb == 201.0


def test_the_record_computes_wait_and_efficiency_and_leaves_out_the_unknown() -> None:
    measured = Measured(
        source="sacct", state="COMPLETED", submitted_at="2026-11-30T10:00:00",
        started_at="2026-11-30T10:00:30", ended_at="2026-11-30T10:01:30", elapsed_s=60.0, cpu_s=90.0,
        cpus=2, max_rss_mb=1100.0, node="n1",
    )  # fmt: skip
    facts = JobFacts("slp-x-2-plane-0", 2, 1, "COMPLETED", cpus=2, memory_mb=81920.0, time_limit_minutes=60)
    record = usage_record(measured, facts)
    assert record["queue_wait_s"] == 30.0 and record["cpu_efficiency"] == 0.75
    assert record["requested_memory_mb"] == 81920.0 and record["time_limit_minutes"] == 60, "the request"
    bare = usage_record(Measured(state="FAILED"), facts)
    assert "cpu_s" not in bare and "cpu_efficiency" not in bare and "queue_wait_s" not in bare
    assert (bare["state"], bare["source"], bare["cpus"]) == ("FAILED", "job", 2)


def test_the_probe_asks_for_usage_on_stdin_and_parses_each_source() -> None:
    request = ProbeRequest(usage=(("1001", PurePosixPath("/w/j/usage-1001.json")),))
    command, data = build_probe(request, AccountingMode.SACCT)
    # header: 0 ids, 0 names, 2 file records (path, no digest), 0 leases, 1 usage id; then the records
    assert data == b"0 0 2 0 1 0\x00/w/j/usage-1001.json\x00-\x001001\x00"
    assert "1001" not in command
    with pytest.raises(ConfigurationError):
        build_probe(ProbeRequest(usage=(("1;rm", PurePosixPath("/x")),)), AccountingMode.SACCT)
    own = base64.b64encode(job_usage_text(
        cpu_s=1.0, max_rss_kib=409600, started_at="s", ended_at="e", elapsed_s=1.0, node="n", environment={}
    ).encode()).decode()  # fmt: skip
    sacct = "\n".join(_lines("usage_sacct.txt"))
    text = f"{MARKER} begin usage-sacct\n{sacct}\n{MARKER} end 0\n"
    text += f"{MARKER} begin file 0\n{own}\n{MARKER} end 0\n"
    found = parse_usage_sections(split_sections(text), request.usage)
    assert found["1001"].source == "sacct" and found["1001"].max_rss_mb == 400.0, "the job saw a higher peak"
    lagging = f"{MARKER} begin usage-sacct\n{MARKER} end 0\n{MARKER} begin file 0\n{own}\n{MARKER} end 0\n"
    (late,) = parse_usage_sections(split_sections(lagging), request.usage).values()
    assert late.pending and late.source == "job", "sacct has no final record yet: ask again later"
    scontrol = lagging.replace("usage-sacct", "usage-scontrol")
    (own_only,) = parse_usage_sections(split_sections(scontrol), request.usage).values()
    assert not own_only.pending, "without accounting, the job's own figures are all there is"
    missing = f"{MARKER} begin usage-scontrol\n{MARKER} end 0\n{MARKER} begin file 0\n{MARKER} end missing\n"
    assert parse_usage_sections(split_sections(missing), request.usage) == {}, "nothing known: asked again"
