"""The run report: written next to the journal at a run's end, made by `sl-process report`, and drawn by
a real headless Chromium (a non-blank screenshot with the timeline's bars, every job in its DOM)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
from report_browser import Elements, count_colour, decode_png, dump_dom, screenshot, share_not_white

from sl_pipelines.adapters.local import LocalBackend
from sl_pipelines.cli import process
from sl_pipelines.core.report_html import render_report
from sl_pipelines.orchestration.journal import RunJournal, iter_journals
from sl_pipelines.orchestration.report import build_report, report_path
from sl_pipelines.workers.demo_data import generate_session

sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))
from report_records import full_record  # the unit tests' records

SESSION = "2026-01-05 <b>&;$(touch pwned)"
GREEN, RED = (0x2E, 0x85, 0x40), (0xC0, 0x39, 0x2B)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    generate_session(tmp_path / "local" / "storage", "proj", "A1", SESSION, planes=2, size_kb=4)
    return tmp_path / "local"


def _run(root: Path, pipeline: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, RunJournal]:
    code = process.main([pipeline, SESSION, "--local-root", str(root), "--json", "--poll-interval", "0.2"])
    capsys.readouterr()
    (journal,) = list(iter_journals())
    return code, journal


def test_a_failed_run_writes_its_report_with_every_job_and_the_stderr_tail(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = root / "storage" / "proj" / "A1" / SESSION / "raw_data"
    (raw / "ax_checksum.txt").write_text("0" * 32 + "\n")
    code, journal = _run(root, "checksum", capsys)
    assert code == 1
    page = report_path(journal.token).read_text(encoding="utf-8")
    bars = Elements(page).job_bars()
    assert {a["data-job"] for a in bars.values()} == set(journal.job_ids)
    assert {a["data-outcome"] for a in bars.values()} == {"failed"}
    assert "Failures" in page and "<pre>" in page
    assert "2026-01-05 &lt;b&gt;&amp;;$(touch pwned)" in page
    assert "<b>&" not in page


def test_sl_process_report_writes_the_same_run_from_its_record(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, journal = _run(root, "behavior", capsys)
    assert code == 0
    automatic = Elements(report_path(journal.token).read_text(encoding="utf-8")).job_bars()
    assert len(automatic) == 7
    out = tmp_path / "out" / "report.html"
    assert process.main(["report", "--local-root", str(root), SESSION, "-o", str(out)]) == 0
    assert f"to {out}" in capsys.readouterr().out
    bars = Elements(out.read_text(encoding="utf-8")).job_bars()
    assert bars.keys() == automatic.keys()
    assert {a["data-job"] for a in bars.values()} == set(journal.job_ids)
    assert {a["data-outcome"] for a in bars.values()} == {"ok"}


def test_report_of_an_unknown_run_is_one_sentence(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert process.main(["report", "--local-root", str(root), "nope", "-o", "x.html"]) == 2
    assert "No run 'nope' is recorded" in capsys.readouterr().err
    assert not Path("x.html").exists()


def test_a_report_that_cannot_be_written_is_logged_and_the_run_still_succeeds(
    root: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sl_pipelines.orchestration.report.report_path", lambda token: root / "no" / "\0bad")
    with caplog.at_level(logging.WARNING, logger="sl_pipelines"):
        code, journal = _run(root, "behavior", capsys)
    assert code == 0
    assert journal.status == "SUCCEEDED"
    assert "could not write its run report" in caplog.text


def test_sl_process_report_reads_the_stderr_of_each_failed_jobs_last_attempt(
    local_backend: LocalBackend, tmp_path: Path
) -> None:
    token, job = "0123456789ab", "slp-0123456789ab-1-cam"
    folder = Path(local_backend.working_root) / "sl_jobs" / token / "cam"
    (folder / "attempt-2").mkdir(parents=True)
    (folder / "stderr.txt").write_text("first attempt: out of memory\n")
    (folder / "attempt-2" / "stderr.txt").write_text("second attempt: <disk> full\n")
    attempts = [
        {"attempt": 1, "job_id": "1", "state": "OUT_OF_MEMORY", "reason": "", "submitted_at": ""},
        {"attempt": 2, "job_id": "2", "state": "FAILED", "reason": "", "submitted_at": ""},
    ]
    record = RunJournal(
        token, "behavior", "local", ("p/a/s",), 1, {}, "", job_ids={job: "2"}, attempts={job: attempts}
    )
    page = build_report(local_backend, record, {})
    assert "<pre>second attempt: &lt;disk&gt; full</pre>" in page
    assert "first attempt" not in page


def test_chromium_draws_the_report_and_its_timeline(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(render_report(full_record(), generated_at="2026-11-30T10:06:00+00:00"), encoding="utf-8")
    width, height, pixels = decode_png(screenshot(page, tmp_path))
    assert (width, height) == (1200, 900)
    assert share_not_white(pixels) > 0.03
    assert count_colour(pixels, GREEN) > 2000  # the completed jobs' bars and badges
    assert count_colour(pixels, RED) > 1000  # the failed attempts' bars
    bars = Elements(dump_dom(page, tmp_path)).job_bars()
    assert set(bars) == {
        "job-1-binarize-1",
        "job-2-plane-0-1",
        "job-2-plane-0-2",
        "job-2-plane-1-1",
        "job-2-plane-2-1",
    }


def test_a_blank_page_is_seen_as_blank(tmp_path: Path) -> None:
    page = tmp_path / "blank.html"
    page.write_text("<!DOCTYPE html><html><body></body></html>", encoding="utf-8")
    _, _, pixels = decode_png(screenshot(page, tmp_path))
    assert share_not_white(pixels) < 0.001
    assert not Elements(dump_dom(page, tmp_path)).job_bars()
    assert json.dumps(count_colour(pixels, GREEN)) == "0"
