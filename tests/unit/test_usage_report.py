"""Usage per stage and the hints on requests that are far off (pure), as tables."""

from __future__ import annotations

from typing import Any

import pytest

from sl_pipelines.core.usage_report import UsageEntry, hours, request_hints, stage_totals

GB = 1024.0


def _entry(kind: str = "plane", stage: int = 2, pipeline: str = "suite2p", **record: Any) -> UsageEntry:
    base: dict[str, Any] = {
        "state": "COMPLETED",
        "elapsed_s": 600.0,
        "cpu_s": 600.0,
        "cpus": 1,
        "max_rss_mb": 3 * GB,
        "requested_memory_mb": 4 * GB,
        "time_limit_minutes": 30,
    }
    base.update(record)
    return UsageEntry(pipeline, stage, "planes" if stage == 2 else "binarize", kind, base)


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        pytest.param([{}], [], id="requests that fit: no hint"),
        pytest.param(
            [{"max_rss_mb": 1.1 * GB, "requested_memory_mb": 80 * GB}, {"max_rss_mb": 0.9 * GB}],
            ["suite2p plane: used 1.1 of 80 GB — lower memory_gb"],
            id="memory far above the largest peak of the kind",
        ),
        pytest.param(
            [{"max_rss_mb": 100.0, "requested_memory_mb": 1 * GB}], [], id="less than a GB to save: no hint"
        ),
        pytest.param(
            [{"max_rss_mb": 3.8 * GB}],
            ["suite2p plane: used 3.8 of 4 GB, close to the limit — raise memory_gb"],
            id="memory close to the limit",
        ),
        pytest.param(
            [{"state": "OUT_OF_MEMORY", "max_rss_mb": 4 * GB}],
            ["suite2p plane: ran out of memory with 4 GB — raise memory_gb"],
            id="out of memory",
        ),
        pytest.param(
            [{"elapsed_s": 300.0, "cpu_s": 300.0, "time_limit_minutes": 600}],
            ["suite2p plane: ran at most 5 min of 600 min — lower time_limit_minutes"],
            id="time limit far above the longest job",
        ),
        pytest.param(
            [{"elapsed_s": 5.0, "cpu_s": 5.0, "time_limit_minutes": 60}],
            [],
            id="under an hour to save: no time hint",
        ),
        pytest.param(
            [{"state": "TIMEOUT", "elapsed_s": 1800.0, "cpu_s": 1800.0}],
            ["suite2p plane: hit its time limit of 30 min — raise time_limit_minutes"],
            id="timeout",
        ),
        pytest.param(
            [{"elapsed_s": 1700.0, "cpu_s": 1700.0}],
            ["suite2p plane: ran 28 min of 30 min, close to the limit — raise time_limit_minutes"],
            id="time close to the limit",
        ),
        pytest.param(
            [{"cpus": 30, "cpu_s": 720.0}],
            ["suite2p plane: kept 1.2 of 30 CPUs busy — lower cpus"],
            id="CPUs mostly idle",
        ),
        pytest.param([{"cpus": 4, "cpu_s": 2000.0}], [], id="CPUs busy enough"),
        pytest.param([{"cpus": 4, "cpu_s": None}], [], id="CPU time unknown: no CPU hint"),
    ],
)
def test_hints(records: list[dict[str, Any]], expected: list[str]) -> None:
    assert request_hints([_entry(**record) for record in records]) == expected


def test_hints_are_per_pipeline_and_job_kind() -> None:
    entries = [
        _entry(kind="binarize", stage=1, max_rss_mb=0.5 * GB, requested_memory_mb=10 * GB),
        _entry(kind="plane"),
        _entry(kind="plane", pipeline="video", max_rss_mb=0.2 * GB, requested_memory_mb=8 * GB),
    ]
    assert request_hints(entries) == [
        "suite2p binarize: used 512 MB of 10 GB — lower memory_gb",
        "video plane: used 205 MB of 8 GB — lower memory_gb",
    ]


def test_stage_totals_sum_cpu_hours_and_keep_the_largest_figures() -> None:
    entries = [
        _entry(kind="binarize", stage=1, elapsed_s=3600.0, cpu_s=1800.0, cpus=2, queue_wait_s=5.0),
        _entry(cpu_s=600.0, elapsed_s=600.0, cpus=1, max_rss_mb=2 * GB, queue_wait_s=30.0),
        _entry(cpu_s=300.0, elapsed_s=900.0, cpus=1, max_rss_mb=3 * GB, requested_memory_mb=6 * GB),
        _entry(state="FAILED", cpu_s=None, elapsed_s=None, max_rss_mb=None),
    ]
    first, second = stage_totals(entries)
    assert (first.stage, first.stage_name, first.jobs) == (1, "binarize", 1)
    assert first.cpu_hours == 0.5 and first.allocated_cpu_hours == 2.0 and first.cpu_efficiency == 0.25
    assert (second.jobs, second.cpu_hours, second.allocated_cpu_hours) == (3, 0.25, 1500 / 3600)
    assert second.cpu_efficiency == pytest.approx(0.6)
    assert (second.max_rss_mb, second.requested_memory_mb, second.longest_s) == (3 * GB, 6 * GB, 900.0)
    assert (second.max_queue_wait_s, second.time_limit_minutes) == (30.0, 30)
    assert second.as_json()["cpu_efficiency"] == 0.6 and second.as_json()["stage_name"] == "planes"
    assert stage_totals([]) == []


def test_no_cpu_time_no_efficiency() -> None:
    (only,) = stage_totals([_entry(cpu_s=None, elapsed_s=None)])
    assert only.cpu_efficiency is None and only.cpu_hours == 0


@pytest.mark.parametrize(
    ("value", "text"), [(0.00123, "0.0012"), (1.254, "1.25"), (130.4, "130"), (0.0, "0.0000")]
)
def test_cpu_hours_text(value: float, text: str) -> None:
    assert hours(value) == text
