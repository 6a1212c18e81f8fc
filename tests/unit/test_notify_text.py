"""What notifications say, and which --notify values are accepted."""

from __future__ import annotations

import pytest

from sl_pipelines.core.notify_text import (
    NotifyTarget,
    RunFacts,
    TargetKind,
    cpu_hours,
    failure_notice,
    parse_target,
    run_end_notice,
    stall_notice,
)
from sl_pipelines.errors import ConfigurationError

FAILED = RunFacts(
    pipeline="suite2p",
    sessions=("proj/A1/2026-01-05",),
    token="ab12cd",
    status="FAILED",
    reason="job 17 (plane_1) OUT_OF_MEMORY",
    failed_job="plane_1",
    stderr_tail="\n".join(f"line {i}" for i in range(30)),
)


@pytest.mark.parametrize(
    ("text", "kind", "address"),
    [
        (
            "https://hooks.slack.com/services/T/B/x",
            TargetKind.WEBHOOK,
            "https://hooks.slack.com/services/T/B/x",
        ),
        ("http://127.0.0.1:8065/hooks/abc", TargetKind.WEBHOOK, "http://127.0.0.1:8065/hooks/abc"),
        (" mailto:lab@example.org ", TargetKind.MAIL, "lab@example.org"),
        ("MAILTO:lab@example.org", TargetKind.MAIL, "lab@example.org"),
    ],
)
def test_targets(text: str, kind: TargetKind, address: str) -> None:
    assert parse_target(text) == NotifyTarget(kind, address)


@pytest.mark.parametrize(
    "text",
    ["hooks.slack.com/x", "ftp://host/x", "https://", "mailto:", "mailto:a@b.org,c@d.org", "lab@example.org"],
)
def test_bad_targets_say_what_to_give(text: str) -> None:
    with pytest.raises(ConfigurationError, match="--notify"):
        parse_target(text)


def test_a_webhook_is_logged_without_its_secret_path() -> None:
    assert (
        parse_target("https://hooks.example.org:8443/services/SECRET").label
        == "https://hooks.example.org:8443/…"
    )
    assert parse_target("mailto:lab@example.org").label == "mailto:lab@example.org"


def test_failure_names_pipeline_session_reason_job_and_stderr_tail() -> None:
    notice = failure_notice(FAILED, "lab")
    assert notice.subject == "[sl_pipelines] FAILED: suite2p proj/A1/2026-01-05"
    lines = notice.text.splitlines()
    assert lines[0] == "sl_pipelines on lab: suite2p on proj/A1/2026-01-05 (run ab12cd) FAILED."
    assert lines[1] == "Reason: job 17 (plane_1) OUT_OF_MEMORY"
    assert lines[2] == "Failing job: plane_1"
    assert lines[-1] == "    line 29"
    assert "line 19" not in notice.text  # only the last ten lines


def test_stall_notice() -> None:
    running = RunFacts("behavior", ("p/a/s",), "t1", "RUNNING")
    notice = stall_notice(running, "camera has run 50 s, 83% of its 60 s time limit", "lab")
    assert notice.text == (
        "sl_pipelines on lab: behavior on p/a/s (run t1) looks stalled: camera has run 50 s, 83% of its "
        "60 s time limit."
    )


def test_run_end_counts_statuses_lists_failures_and_cpu_hours() -> None:
    usage = {"1": {"name": "a", "cpu_s": 5400.0}, "2": {"name": "b", "cpu_s": 1800}, "3": {"name": "c"}}
    ok = RunFacts("suite2p", ("p/a/s2",), "t2", "SUCCEEDED", usage=usage)
    notice = run_end_notice([FAILED, ok], "lab", 3725)
    assert notice.subject == "[sl_pipelines] run ended: 1 failed, 1 succeeded (suite2p)"
    lines = notice.text.splitlines()
    assert (
        lines[0]
        == "sl_pipelines on lab: 2 suite2p pipeline(s) ended after 1 h 02 min: 1 failed, 1 succeeded."
    )
    assert lines[1] == "CPU time used: 2.00 CPU-hours."
    assert lines[2] == (
        "- suite2p on proj/A1/2026-01-05 (run ab12cd) FAILED [plane_1]: job 17 (plane_1) OUT_OF_MEMORY"
    )


def test_run_end_without_usage_leaves_cpu_hours_out() -> None:
    ok = RunFacts("checksum", ("p/a/s",), "t", "SUCCEEDED")
    notice = run_end_notice([ok], "local", 5)
    assert "CPU" not in notice.text
    assert notice.text == "sl_pipelines on local: 1 checksum pipeline(s) ended after 0 min 05 s: 1 succeeded."


def test_cpu_hours_tolerates_missing_and_odd_records() -> None:
    assert cpu_hours([None, {}]) is None
    assert cpu_hours([{"1": {"cpu_s": True}, "2": {"cpu_s": "x"}}]) is None
    assert cpu_hours([{"1": {"cpu_s": 360}}, {"2": {"cpu_s": 0}}]) == pytest.approx(0.1)
