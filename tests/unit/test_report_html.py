"""The run report page: every job and attempt, usage bars, failures, escaping; with and without the
attempt history and usage in the record."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from report_records import SESSION, TOKEN, bare_record, full_record, name

from sl_pipelines.core.report_html import duration, render_report
from sl_pipelines.core.report_model import view_run
from sl_pipelines.core.resolve import split_job_name

NOW = "2026-11-30T10:06:00+00:00"


class _Elements(HTMLParser):
    """Every start tag with its attributes (the page must parse, and its bars be found by class/id)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> _Elements:
    parser = _Elements()
    parser.feed(page)
    parser.close()
    return parser


def bars(page: str) -> dict[str, dict[str, str | None]]:
    return {
        str(a["id"]): a for tag, a in parse(page).tags if tag == "div" and "job-bar" in (a.get("class") or "")
    }


def test_every_attempt_of_every_job_has_a_bar_with_its_outcome() -> None:
    page = render_report(full_record(), states={"104": "CANCELLED"}, generated_at=NOW)
    found = bars(page)
    assert set(found) == {
        "job-1-binarize-1",
        "job-2-plane-0-1",
        "job-2-plane-0-2",
        "job-2-plane-1-1",
        "job-2-plane-2-1",
    }
    outcomes = {key: a["data-outcome"] for key, a in found.items()}
    assert outcomes == {
        "job-1-binarize-1": "ok",
        "job-2-plane-0-1": "failed",
        "job-2-plane-0-2": "ok",
        "job-2-plane-1-1": "failed",
        "job-2-plane-2-1": "cancelled",
    }
    assert found["job-2-plane-0-2"]["data-job"] == name(2, "plane-0")
    assert "Stage 3 · combine" in page
    assert "not submitted" in page


def test_timed_attempts_are_placed_on_one_time_axis() -> None:
    page = render_report(full_record(), generated_at=NOW)
    # binarize ran 10:00:00-10:00:50 of a span 10:00:00-10:05:00 (the record's last write; 300 s)
    assert 'class="seg ok" style="left:0.00%;width:16.67%"' in page
    # plane-0's second attempt ran 10:02:10-10:04:00
    assert 'class="seg ok" style="left:43.33%;width:36.67%"' in page
    assert 'class="seg failed" style="left:20.00%;width:20.00%"' in page  # the OOM attempt, 60 s


def test_a_record_without_attempts_or_usage_still_shows_every_job() -> None:
    page = render_report(bare_record(), generated_at=NOW)
    found = bars(page)
    assert set(found) == {"job-1-binarize-1", "job-2-plane-0-1", "job-2-plane-1-1", "job-2-plane-2-1"}
    assert found["job-1-binarize-1"]["data-outcome"] == "ok"  # the run moved past stage 1
    assert found["job-2-plane-1-1"]["data-outcome"] == "unknown"
    assert "No job times are recorded" in page
    assert "No resource use is recorded" in page
    assert page.count('class="seg untimed') == 4


def test_attempts_known_only_by_their_submission_reach_to_the_end_of_the_axis() -> None:
    record = full_record()
    del record["usage"]
    page = render_report(record, generated_at=NOW)
    # plane-0's attempts were submitted at 10:01:00 and 10:02:10; the axis: to the record's last write
    assert 'class="seg approx failed" style="left:0.00%;width:29.17%"' in page  # until its retry
    assert 'class="seg approx ok" style="left:29.17%;width:70.83%"' in page
    assert page.count('class="seg untimed') == 3  # the jobs never retried: no times at all


def test_a_retried_attempt_known_only_by_its_usage_under_its_own_slurm_name_joins_its_job() -> None:
    record = full_record()
    del record["attempts"]
    record["usage"]["107"] = {**record["usage"]["103"], "name": name(2, "plane-1") + ".a2"}
    del record["usage"]["107"]["attempt"]
    view = view_run(record)
    assert [(a.attempt, a.job_id) for a in view.attempts if a.key == "plane-1"] == [(1, "103"), (2, "107")]


def test_slurm_states_fill_in_what_the_record_lacks() -> None:
    page = render_report(bare_record(), states={"103": "FAILED", "104": "NOT_FOUND"}, generated_at=NOW)
    found = bars(page)
    assert found["job-2-plane-1-1"]["data-outcome"] == "failed"
    assert found["job-2-plane-2-1"]["data-outcome"] == "unknown"  # a purged job is not an outcome


def test_a_succeeded_run_without_states_shows_every_job_completed() -> None:
    page = render_report(bare_record(status="SUCCEEDED", reason="", stage=3), generated_at=NOW)
    assert {a["data-outcome"] for a in bars(page).values()} == {"ok"}
    assert '<h2>Failures</h2><p class="note">None.</p>' in page


def test_usage_table_shows_used_against_requested() -> None:
    page = render_report(full_record(), generated_at=NOW)
    table = page.split("<h2>Resource use</h2>", 1)[1].split("<h2>Failures</h2>", 1)[0]
    assert table.count("<tr><td>") == 4
    assert "1.01 GB of 1 GB" in table  # the OOM attempt: over its request, a red bar
    assert 'class="over" style="width:100.0%"' in table
    assert "800 MB of 10 GB" in table
    assert "7% of 1 CPU" in table
    assert "50 s of 10m00s" in table
    # CPU-hours: (90 + 90 + 90 + 2) s used; held (50 * 2 * 3 + 50 * 1) s
    assert "CPU time used: 0.0756 CPU-hours (78% of the 0.0972 CPU-hours held)." in table


def test_a_figure_the_source_did_not_give_shows_as_a_dash_without_a_bar() -> None:
    record = full_record()
    for key in ("max_rss_mb", "cpu_efficiency", "time_limit_minutes", "queue_wait_s"):
        del record["usage"]["103"][key]
    record["usage"]["103"]["requested_memory_mb"] = None
    page = render_report(record, generated_at=NOW)
    row = next(r for r in page.split("<tr>") if r.startswith("<td>plane-1</td>"))
    assert row.count("&ndash;") == 3  # memory, CPU efficiency, queue wait
    assert 'class="meter"' not in row
    assert "<td>50 s</td>" in row  # elapsed without a limit: the time alone


def test_failures_show_each_failed_attempt_and_the_stderr_tail() -> None:
    tail = "Traceback <module>\nValueError: bad & worse"
    page = render_report(full_record(), stderr_tails={name(2, "plane-1"): tail}, generated_at=NOW)
    failures = page.split("<h2>Failures</h2>", 1)[1]
    assert "plane-0 · attempt 1 · OUT_OF_MEMORY (OutOfMemory)" in failures
    assert "plane-1 · attempt 1 · FAILED" in failures
    assert "<pre>Traceback &lt;module&gt;\nValueError: bad &amp; worse</pre>" in failures
    assert "job 103 (plane-1) FAILED with exit code 1 &lt;&amp;&gt;" in failures


def test_the_job_the_reason_names_is_the_failed_one_whatever_slurm_said_last() -> None:
    record = bare_record(reason=f"Job {name(2, 'plane-1')} reported an error: no disk")
    record["job_ids"][name(2, "plane-10")] = "110"
    states = {"103": "RUNNING", "110": "CANCELLED"}  # it reported its error while still running
    page = render_report(record, states=states, stderr_tails={name(2, "plane-1"): "boom"}, generated_at=NOW)
    found = bars(page)
    assert found["job-2-plane-1-1"]["data-outcome"] == "failed"  # not plane-10, whose name holds plane-1
    assert found["job-2-plane-10-1"]["data-outcome"] == "cancelled"
    assert "plane-1 · attempt 1 · FAILED (the run&#x27;s failure is pinned on this job)" in page
    assert "<pre>boom</pre>" in page


def test_the_failed_job_given_wins_over_the_reason_and_keeps_a_failure_state_slurm_gave() -> None:
    view = view_run(bare_record(), {"104": "TIMEOUT", "103": "COMPLETED"}, failed_job=name(2, "plane-2"))
    states = {a.key: (a.state, a.outcome) for a in view.attempts}
    assert states["plane-2"] == ("TIMEOUT", "failed")
    assert states["plane-1"] == ("COMPLETED", "ok")


def test_a_failed_job_known_only_from_its_stderr_tail_is_listed() -> None:
    page = render_report(bare_record(reason=""), stderr_tails={name(2, "plane-1"): "boom"}, generated_at=NOW)
    assert "plane-1 · attempt 1 · state not known" in page
    assert "<pre>boom</pre>" in page


def test_every_text_is_escaped() -> None:
    hostile = "<script>alert(1)</script>&;$()"
    record = full_record(sessions=[SESSION, hostile], pipeline="<i>x</i>", backend='a"b')
    record["job_ids"][f"slp-{TOKEN}-2-{hostile}"] = "105"
    page = render_report(record, generated_at=NOW)
    assert "<script" not in page
    assert "<i>" not in page and "<b>" not in page
    assert "&lt;b&gt;&amp;;$(rm -rf ~)" in page
    tags = parse(page).tags
    assert not any(tag in ("script", "img", "link", "iframe") for tag, _ in tags)
    ids = [a["id"] for _, a in tags if a.get("id")]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", str(i)) for i in ids)
    assert len(ids) == len(set(ids))


def test_the_page_needs_nothing_from_the_network() -> None:
    page = render_report(full_record(), generated_at=NOW)
    assert not re.search(r"(src|href)=|url\(|@import|https?:", page)


def test_an_unreadable_or_odd_record_still_renders() -> None:
    record = {"token": TOKEN, "definition": "stages: [", "job_ids": {"other-job": 7}, "usage": {"9": "x"}}
    page = render_report(record)
    assert bars(page).keys() == {"job-0-other-job-1"}
    assert "UNKNOWN" in page


def test_attempts_only_in_usage_are_shown() -> None:
    record = full_record()
    del record["attempts"]
    view = view_run(record)
    assert [(a.key, a.attempt, a.job_id) for a in view.attempts if a.key == "plane-0"] == [
        ("plane-0", 1, "101"),
        ("plane-0", 2, "102"),
    ]


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        (f"slp-{TOKEN}-2-plane-10", (2, "plane-10")),
        (f"slp-{TOKEN}-1-binarize", (1, "binarize")),
        ("slp-othertoken00-1-binarize", (0, "slp-othertoken00-1-binarize")),
        (f"slp-{TOKEN}-x-binarize", (0, f"slp-{TOKEN}-x-binarize")),
    ],
)
def test_job_names_split_into_stage_and_key(job: str, expected: tuple[int, str]) -> None:
    assert split_job_name(job, TOKEN) == expected


def test_jobs_sort_naturally_within_a_stage() -> None:
    ids = {name(2, f"plane-{i}"): str(i) for i in (10, 2, 1)}
    view = view_run({"token": TOKEN, "job_ids": ids})
    assert [a.key for a in view.attempts] == ["plane-1", "plane-2", "plane-10"]


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.25, "250 ms"), (12, "12 s"), (185, "3m05s"), (7380, "2h03m")]
)
def test_durations_read_naturally(seconds: float, text: str) -> None:
    assert duration(seconds) == text
