"""Notifications reach a real local webhook and a real SMTP server; failing ones never stop a run; stalls
are found on real (local) jobs and flagged in the live view."""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path

import pytest
import yaml
from notify_receivers import free_port, smtp_server, webhook
from rich.console import Console

from sl_pipelines.adapters.local import LocalBackend
from sl_pipelines.adapters.notify import Notifier, SmtpSettings, read_password_file
from sl_pipelines.cli import process
from sl_pipelines.cli.overview import LiveView
from sl_pipelines.core.notify_text import Notice, parse_target
from sl_pipelines.errors import ConfigurationError
from sl_pipelines.orchestration.manager import PipelineManager
from sl_pipelines.orchestration.pipeline import ProcessingPipeline, default_configs_dir
from sl_pipelines.workers.demo_data import generate_session

NOTICE = Notice("[sl_pipelines] FAILED: suite2p p/a/s", "sl_pipelines on lab: suite2p failed.\nReason: x")


def test_a_notice_reaches_a_webhook_and_a_mailbox_with_a_login(tmp_path: Path) -> None:
    secret = tmp_path / "smtp-password"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    with webhook() as hook, smtp_server(password="s3cret") as box:
        settings = SmtpSettings(
            host="127.0.0.1",
            port=box.port,
            sender="runs@lab.org",
            user="lab",
            password=read_password_file(secret),
        )
        notifier = Notifier([parse_target(hook.url), parse_target("mailto:me@lab.org")], settings)
        notifier.post(NOTICE)
        notifier.close()
        assert hook.bodies == [{"text": NOTICE.text}]
        assert hook.content_types == ["application/json"]
        (message,) = box.messages
        assert message["Subject"] == NOTICE.subject
        assert message["From"] == "runs@lab.org"
        assert box.envelopes == [("runs@lab.org", ["me@lab.org"])]
        assert box.bodies() == [NOTICE.text]
        assert box.logins == [("lab", "s3cret")]
        assert (notifier.sent, notifier.failed) == (2, 0)


def test_failing_targets_are_logged_and_never_block(caplog: pytest.LogCaptureFixture) -> None:
    closed = free_port()
    with webhook(status=500) as broken, webhook() as good, caplog.at_level(logging.WARNING, "sl_pipelines"):
        targets = [
            parse_target(f"http://127.0.0.1:{closed}/hook"),
            parse_target(broken.url),
            parse_target("mailto:me@lab.org"),
            parse_target(good.url),
        ]
        notifier = Notifier(targets, SmtpSettings(host="127.0.0.1", port=closed))
        started = time.monotonic()
        notifier.post(NOTICE)
        posted = time.monotonic() - started
        notifier.close()
        assert posted < 0.05, "posting only queues"
        assert good.texts() == [NOTICE.text], "a failing target does not keep the others from their message"
        assert len(broken.bodies) == 1
    assert (notifier.sent, notifier.failed) == (1, 3)
    warnings = [r.getMessage() for r in caplog.records]
    assert any(f"127.0.0.1:{closed}/…" in w and "refused" in w.lower() for w in warnings), warnings
    assert any("HTTP 500" in w for w in warnings), warnings
    assert any("mailto:me@lab.org" in w for w in warnings), warnings
    assert not any("secret-token" in w for w in warnings), "a webhook's secret path is never logged"


def test_a_password_file_others_can_read_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "smtp-password"
    secret.write_text("x")
    secret.chmod(0o644)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        read_password_file(secret)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    generate_session(tmp_path / "local" / "storage", "proj", "A1", "S1", planes=2, size_kb=4)
    return tmp_path / "local"


def _checksum(root: Path, *extra: str) -> int:
    return process.main(
        ["checksum", "proj/A1/S1", "--local-root", str(root), "--json", "--poll-interval", "0.2", *extra]
    )


def test_sl_process_tells_a_failure_and_the_end_and_nothing_without_notify(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with webhook() as hook:
        assert _checksum(root) == 0
        assert _checksum(root, "--notify", hook.url) == 0
        assert len(hook.bodies) == 1, "a successful run: only its end"
        assert "1 checksum pipeline(s) ended" in hook.texts()[0]
        assert "1 succeeded" in hook.texts()[0]
        raw = root / "storage" / "proj" / "A1" / "S1" / "raw_data"
        (raw / "ax_checksum.txt").write_text("0" * 32 + "\n")
        assert _checksum(root, "--notify", hook.url) == 1
        failure, end = hook.texts()[1:]
        assert failure.startswith("sl_pipelines on local: checksum on proj/A1/S1 (run ")
        assert "FAILED.\nReason: " in failure
        assert "checksum" in failure.lower()
        assert "1 failed" in end
    capsys.readouterr()


def test_a_bad_notify_value_is_refused_before_anything_runs(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _checksum(root, "--notify", "hooks.example.org/x") == 2
    assert "neither a webhook URL" in capsys.readouterr().err
    assert not (root / "storage" / "proj" / "A1" / "S1" / "tracking_data").exists()
    assert _checksum(root, "--stall", "limit_fractoin=0.5") == 2
    assert "unknown stall threshold" in capsys.readouterr().err


def test_a_slow_job_is_flagged_stalled_in_the_live_view_and_told_once(
    local_backend: LocalBackend, tmp_path: Path
) -> None:
    generate_session(Path(local_backend.storage_root), "proj", "A1", "S2", planes=1, size_kb=4)
    folder = tmp_path / "configs"
    folder.mkdir()
    data = yaml.safe_load((default_configs_dir() / "behavior.yaml").read_text())
    slow = data["stages"][0]["jobs"][0]
    slow["command"] += " --seconds 6"
    slow["time_limit_minutes"] = 1
    data["stalls"] = {"limit_fraction": 0.05}  # 3 s of a 1-minute limit
    (folder / "behavior.yaml").write_text(yaml.safe_dump(data))
    pipeline = ProcessingPipeline.create("behavior", ["proj/A1/S2"], local_backend, configs_dir=folder)
    manager = PipelineManager(local_backend, [pipeline], poll_interval=0.2)
    told, shown = [], []
    deadline = time.monotonic() + 60
    while not manager.finished:
        assert time.monotonic() < deadline
        manager.cycle()
        told += [(run.resolved.token, stall.detail) for run, stall in manager.new_stalls]
        out = Console(file=io.StringIO(), width=250)
        out.print(LiveView().render(manager.pipelines, stalls=manager.stalls.current))
        shown.append(out.file.getvalue())  # type: ignore[attr-defined]
        time.sleep(0.2)
    assert len(told) == 1, told
    assert told[0][1].startswith("runtime has run ")
    assert "of its 60 s time limit" in told[0][1]
    flagged = [view for view in shown if "stalled: runtime has run" in view]
    assert flagged, shown[-1]
    assert "stalled" not in shown[-1], "a finished run is no longer flagged"
    assert json.dumps(manager.stalls.current) == "{}"


def test_a_workflow_tells_its_failures_and_its_end(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (root / "storage" / "proj" / "A1" / "S1" / "raw_data" / "ax_checksum.txt").write_text("0" * 32 + "\n")
    with webhook() as hook:
        argv = [
            "--workflow",
            "quick",
            "proj/A1/S1",
            "--local-root",
            str(root),
            "--json",
            "--poll-interval",
            "0.2",
        ]
        assert process.main([*argv, "--notify", hook.url]) == 1
        failure, end = hook.texts()
    capsys.readouterr()
    assert failure.startswith("sl_pipelines on local: checksum on proj/A1/S1 (run ")
    assert "FAILED" in failure
    assert end.startswith("sl_pipelines on local: 2 checksum/manifest pipeline(s) ended after ")
    assert ": 1 failed, 1 succeeded.\nCPU time used: " in end  # the jobs' usage, then the failures
    assert "CPU-hours.\n- checksum on proj/A1/S1" in end
