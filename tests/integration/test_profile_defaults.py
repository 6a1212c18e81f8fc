"""Profile job defaults on the testbed: ``profile check`` names a wrong one; a right one reaches sbatch.

The acct cluster (slurmdbd) has one partition, ``main``, no generic resources, the QOS ``normal``, and —
added here, as root, idempotently — an association of its user with the account ``sl_lab``. The noacct
cluster has no accounting database, so account and QOS cannot be verified there.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Testbed
from pipeline_helpers import generate, run_to_end

from sl_pipelines.adapters.profiles import ServerProfile, save_profile
from sl_pipelines.adapters.server import Server
from sl_pipelines.cli import server as cli
from sl_pipelines.orchestration.pipeline import ProcessingPipeline
from sl_pipelines.vocabulary import ProcessingStatus

ACCOUNT = "sl_lab"


@pytest.fixture(scope="module")
def lab_account(testbed: Testbed) -> str:
    """The acct cluster's user gets an association with ``sl_lab`` (no enforcement: jobs run as before)."""
    cluster = testbed.cluster("acct")
    env = {**os.environ, "SLURM_CONF": str(cluster.slurm_conf)}
    for command in (
        ["sacctmgr", "-i", "add", "account", ACCOUNT, f"cluster={cluster.name}", "Description=sl tests"],
        ["sacctmgr", "-i", "add", "user", cluster.user, f"account={ACCOUNT}", f"cluster={cluster.name}"],
    ):
        subprocess.run(command, env=env, capture_output=True, timeout=60, check=False)  # 1: already there
    shown = subprocess.run(
        ["sacctmgr", "-n", "-P", "show", "assoc", f"user={cluster.user}", "format=account"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert ACCOUNT in shown.stdout.split()
    return ACCOUNT


def _check(
    make_profile: Callable[..., ServerProfile],
    cluster: str,
    capsys: pytest.CaptureFixture[str],
    **defaults: str,
) -> tuple[int, dict[str, str]]:
    """Runs ``sl-server profile check`` on a saved profile; returns the exit status and each row's text."""
    save_profile(make_profile(cluster, name="defaults", **defaults))
    code = cli.main(["profile", "check", "defaults"])
    rows = {}
    for line in capsys.readouterr().out.splitlines():
        cells = [cell.strip() for cell in line.strip("│┃ ").split("│")]
        if len(cells) == 3:
            rows[cells[0]] = f"{cells[1]}: {cells[2]}"
    return code, rows


def test_a_bad_partition_is_named_in_one_sentence(
    make_profile: Callable[..., ServerProfile], capsys: pytest.CaptureFixture[str]
) -> None:
    code, rows = _check(make_profile, "noacct", capsys, partition="gpu_nodes")
    assert code == 1
    assert rows["partition gpu_nodes"] == (
        "FAILED: partition 'gpu_nodes' does not exist on this cluster (it has: main); fix it with "
        "'sl-server profile set defaults --partition VALUE'."
    )
    assert rows["slurm (sinfo)"].startswith("ok"), "only the wrong default fails"


def test_good_defaults_pass_and_wrong_ones_are_each_named(
    make_profile: Callable[..., ServerProfile], capsys: pytest.CaptureFixture[str], lab_account: str
) -> None:
    code, rows = _check(make_profile, "acct", capsys, partition="main", account=lab_account, qos="normal")
    assert code == 0, rows
    assert rows["partition main"] == "ok: partition 'main' exists."
    assert rows[f"account {lab_account}"] == f"ok: account '{lab_account}' is one of your Slurm associations."
    assert rows["qos normal"] == "ok: qos 'normal' is allowed for your association."

    code, rows = _check(
        make_profile, "acct", capsys, partition="main", account="nolab", qos="high", gres="gpu:1"
    )
    assert code == 1
    assert rows["partition main"].startswith("ok")
    assert rows["account nolab"].startswith(
        f"FAILED: account 'nolab' is not one of your Slurm associations (yours: {lab_account})"
    )
    assert rows["qos high"].startswith("FAILED: qos 'high' does not exist on this cluster (it has: normal)")
    assert rows["gres gpu:1"].startswith(
        "FAILED: gres 'gpu:1' is not offered in partition main (it offers: none)"
    )


def test_without_accounting_account_and_qos_are_unverified_not_failed(
    make_profile: Callable[..., ServerProfile], capsys: pytest.CaptureFixture[str]
) -> None:
    code, rows = _check(make_profile, "noacct", capsys, account="lab", qos="normal")
    assert code == 0, rows
    assert rows["account lab"].startswith("ok: unverified: account 'lab' not verified")
    assert rows["qos normal"].startswith("ok: unverified: qos 'normal' not verified")


def test_the_profile_partition_and_qos_reach_the_job_script_and_slurm(
    make_server: Callable[..., Server], project: str, private_data_dir: Path, lab_account: str
) -> None:
    server = make_server("acct", partition="main", qos="normal", account=lab_account)
    spec = generate(server, project, "s1")
    pipeline = ProcessingPipeline.create("checksum", [spec], server, keep_job_logs=True)
    run_to_end(server, [pipeline])
    assert pipeline.status is ProcessingStatus.SUCCEEDED, pipeline.describe()
    (resolved,) = pipeline.resolved.stages[1]
    script = server.read_text(resolved.job.script_path)
    assert script is not None
    for line in ("#SBATCH --partition=main", "#SBATCH --qos=normal", f"#SBATCH --account={lab_account}"):
        assert line in script.splitlines()
    job_id = pipeline.journal.job_ids[resolved.name]
    shown = server.run(f"scontrol -o show job {job_id}", check=True).stdout.split()  # what Slurm ran it with
    assert {"Partition=main", "QOS=normal", f"Account={lab_account}"} <= set(shown)
