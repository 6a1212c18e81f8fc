"""The run report on the testbed: a real run with one failing job writes its report at the end, and
`sl-process report` makes it again from the server's record (from another PC, too), with every job, the
failed job's stderr tail, and a page that headless Chromium draws."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from pipeline_helpers import SL_PROCESS, configs_with, generate

from sl_pipelines.adapters.profiles import ServerProfile, save_profile
from sl_pipelines.adapters.server import Server
from sl_pipelines.orchestration.journal import RunJournal

sys.path.insert(0, str(Path(__file__).parents[1] / "component"))
from report_browser import Elements, decode_png, dump_dom, screenshot, share_not_white  # the component tests'

pytestmark = pytest.mark.usefixtures("private_data_dir")

FAILURE = "camera <cable> & ;$(unplugged)"


@pytest.mark.parametrize("cluster", ["acct", "noacct"])
def test_a_run_with_a_failing_job_writes_its_report_and_sl_process_report_makes_it_again(
    make_profile: Callable[..., ServerProfile],
    project: str,
    tmp_path: Path,
    private_data_dir: Path,
    cluster: str,
) -> None:
    profile = make_profile(cluster, name=f"report-{cluster}")
    save_profile(profile)
    server = Server(profile)
    spec = generate(server, project, "s <1>&;$(x)")
    configs = configs_with(tmp_path, "behavior", {"face_camera": f"--fail {FAILURE!r} --exit-code 3"})
    argv = ["behavior", spec, "--server", profile.name, "--configs", str(configs), "--poll-interval", "0.5"]
    run = subprocess.run(
        [*SL_PROCESS, *argv, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 1, run.stderr
    (result,) = json.loads(run.stdout)
    journal = RunJournal.load(private_data_dir / "runs" / f"{result['run_token']}.json")
    assert len(journal.job_ids) == 7
    failed = next(name for name in journal.job_ids if name.endswith("-face_camera"))

    automatic = (private_data_dir / "runs" / f"{journal.token}.html").read_text(encoding="utf-8")
    bars = Elements(automatic).job_bars()
    assert {a["data-job"] for a in bars.values()} == set(journal.job_ids)
    assert next(a for a in bars.values() if a["data-job"] == failed)["data-outcome"] == "failed"
    assert "camera &lt;cable&gt; &amp; ;$(unplugged)" in automatic.split("<h2>Failures</h2>", 1)[1]
    assert "s &lt;1&gt;&amp;;$(x)" in automatic

    out = tmp_path / "report.html"
    made = subprocess.run(  # another PC: no journal there, only the server's record
        [*SL_PROCESS, "report", "--server", profile.name, journal.token, "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "SL_PIPELINES_DATA_DIR": str(tmp_path / "pc2")},
    )
    assert made.returncode == 0, made.stderr
    page = out.read_text(encoding="utf-8")
    bars = Elements(page).job_bars()
    assert {a["data-job"] for a in bars.values()} == set(journal.job_ids)
    assert next(a for a in bars.values() if a["data-job"] == failed)["data-outcome"] == "failed"
    assert "camera &lt;cable&gt; &amp; ;$(unplugged)" in page.split("<h2>Failures</h2>", 1)[1]

    _, _, pixels = decode_png(screenshot(out, tmp_path))
    assert share_not_white(pixels) > 0.03
    assert len(Elements(dump_dom(out, tmp_path)).job_bars()) == 7
    server.close()
