"""Notifications and stalls on the real testbed: sl-process tells a local webhook and a local SMTP server
(aiosmtpd) about real runs; a notifier at a closed port stops nothing; nothing is sent unasked; a job past
the stated fraction of its time limit is flagged by the manager, its quiet tracker by sl-tracker status."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from pipeline_helpers import SL_PROCESS, configs_with, generate, start_manager

from sl_pipelines.adapters.notify import SmtpSettings
from sl_pipelines.adapters.profiles import ServerProfile, save_profile
from sl_pipelines.adapters.server import Server

sys.path.insert(0, str(Path(__file__).parents[1] / "component"))
from notify_receivers import free_port, smtp_server, webhook

pytestmark = pytest.mark.usefixtures("private_data_dir")

SL_TRACKER = [sys.executable, "-c", "from sl_pipelines.cli.tracker import main; raise SystemExit(main())"]


def _process(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SL_PROCESS, *argv, "--json", "--poll-interval", "0.5"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_real_runs_tell_a_webhook_and_a_mailbox_and_a_dead_notifier_stops_nothing(
    make_profile: Callable[..., ServerProfile],
    make_server: Callable[..., Server],
    project: str,
    tmp_path: Path,
) -> None:
    secret = tmp_path / "smtp-password"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    server = make_server("acct")
    ok_session = generate(server, project, "S-ok")
    bad_session = generate(server, project, "S-bad")
    quiet_session = generate(server, project, "S-quiet")
    port = free_port()
    closed = f"http://127.0.0.1:{port}/hook"
    with webhook() as hook, smtp_server(password="s3cret") as box:
        smtp = SmtpSettings(
            host="127.0.0.1", port=box.port, sender="runs@lab.org", user="lab", password_file=secret
        )
        profile = make_profile("acct", smtp=smtp)
        save_profile(profile)
        targets = ["--notify", hook.url, "--notify", "mailto:me@lab.org", "--notify", closed]

        started = time.monotonic()
        result = _process("checksum", ok_session, "--server", profile.name, *targets)
        took = time.monotonic() - started
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)[0]["status"] == "SUCCEEDED"
        assert f"Notification to http://127.0.0.1:{port}/… failed" in result.stderr
        (end,) = hook.texts()
        assert end.startswith(f"sl_pipelines on {profile.name}: 1 checksum pipeline(s) ended after ")
        counts, _, used = end.partition("\n")
        assert counts.endswith(": 1 succeeded.")
        assert re.fullmatch(r"CPU time used: \d+\.\d\d CPU-hours\.", used)  # what the run's jobs used
        assert box.bodies() == [end]
        assert box.messages[0]["Subject"] == "[sl_pipelines] run ended: 1 succeeded (checksum)"
        assert box.logins == [("lab", "s3cret")]
        assert took < 60

        configs = configs_with(tmp_path, "behavior", {"runtime": "--fail 'disk on fire'"})
        result = _process(
            "behavior", bad_session, "--server", profile.name, "--configs", str(configs), *targets
        )
        assert result.returncode == 1, result.stderr
        failure, end = hook.texts()[1:]
        assert failure.startswith(f"sl_pipelines on {profile.name}: behavior on {bad_session} (run ")
        assert "FAILED.\nReason: " in failure
        assert "disk on fire" in failure
        assert "Failing job: " in failure and "runtime" in failure
        assert ": 1 failed.\n" in end
        assert "disk on fire" in end
        assert box.bodies()[1:] == [failure, end]

        sent = (len(hook.bodies), len(box.messages))
        result = _process("checksum", quiet_session, "--server", profile.name)
        assert result.returncode == 0, result.stderr
        time.sleep(1)
        assert (len(hook.bodies), len(box.messages)) == sent, "nothing is sent when not asked"
        assert "Notification" not in result.stderr

        save_profile(replace(profile, notify=(hook.url,)))  # the profile's default targets
        result = _process("checksum", quiet_session, "--server", profile.name)
        assert result.returncode == 0, result.stderr
        assert len(hook.bodies) == sent[0] + 1
        assert len(box.messages) == sent[1]


def test_a_job_past_its_time_limit_fraction_is_flagged_and_told_once(
    make_profile: Callable[..., ServerProfile],
    make_server: Callable[..., Server],
    project: str,
    tmp_path: Path,
) -> None:
    server = make_server("noacct")
    session = generate(server, project, "S-slow")
    profile = make_profile("noacct")
    save_profile(profile)
    configs = configs_with(tmp_path, "behavior", {"runtime": "--seconds 30"}, time_limit_minutes=1)
    log = tmp_path / "manager.log"
    with webhook() as hook:
        manager = start_manager(
            [
                "behavior",
                session,
                "--server",
                profile.name,
                "--configs",
                str(configs),
                "--json",
                "--poll-interval",
                "1",
                "--notify",
                hook.url,
                "--stall",
                "limit_fraction=0.25",
            ],
            log,
        )
        flagged = ""
        deadline = time.monotonic() + 90
        while manager.poll() is None and not flagged:
            assert time.monotonic() < deadline
            status = subprocess.run(
                [*SL_TRACKER, "--server", profile.name, "status", session, "--stall-after", "0.15"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert status.returncode == 0, status.stderr
            flagged = next((line for line in status.stdout.splitlines() if "stalled" in line), "")
            time.sleep(1)
        assert "behavior" in flagged and "running stalled" in flagged, flagged
        manager.communicate(timeout=120)  # closes its stdout pipe too
        assert manager.returncode == 0, log.read_text()
        stalls = [text for text in hook.texts() if "looks stalled" in text]
        assert len(stalls) == 1, hook.texts()
        assert "runtime has run " in stalls[0] and "of its 60 s time limit" in stalls[0]
        assert any("1 succeeded" in text for text in hook.texts())
    assert "stalled: runtime has run" in log.read_text()
