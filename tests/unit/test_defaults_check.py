"""A profile's job defaults against what sinfo, sacctmgr and sshare say (pure tables)."""

from __future__ import annotations

import pytest

from sl_pipelines.core.defaults_check import (
    FACTS_COMMAND,
    ClusterFacts,
    check_job_defaults,
    parse_cluster_facts,
)
from sl_pipelines.core.framing import MARKER
from sl_pipelines.core.job import JobDefaults


def _output(partitions: str, associations: str, shares: str, qos: str, *, accounting: bool = True) -> str:
    status = "0" if accounting else "1"
    return (
        "Welcome to the cluster!\n"  # a login banner before the answer
        f"{MARKER} begin partitions\n{partitions}{MARKER} end 0\n"
        f"{MARKER} begin associations\n{associations}{MARKER} end {status}\n"
        f"{MARKER} begin shares\n{shares}{MARKER} end 0\n"
        f"{MARKER} begin qos\n{qos}{MARKER} end {status}\n"
    )


CLUSTER = _output(
    "main|(null)\ngpu|gpu:a100:4(S:0-1)\ngpu|gpu:a100:2,tmpdisk:100\n",
    "lab|normal,high\nother|normal\n",
    "",
    "normal\nhigh\nlow\n",
)
NO_ACCOUNTING = _output(
    "main|(null)\n",
    "You are not running a supported accounting_storage plugin\n",
    "",
    "You are not running a supported accounting_storage plugin\n",
    accounting=False,
)


def test_the_command_asks_every_source_once() -> None:
    for tool in ("sinfo", "sacctmgr -n -P show assoc", "sshare", "show qos"):
        assert tool in FACTS_COMMAND


def test_facts_are_read_past_a_banner() -> None:
    facts = parse_cluster_facts(CLUSTER)
    assert facts.partitions == {"main": (), "gpu": ("gpu:a100:2", "gpu:a100:4", "tmpdisk:100")}
    assert facts.associations == (("lab", ("normal", "high")), ("other", ("normal",)))
    assert facts.qos == ("normal", "high", "low")


def _verdicts(defaults: JobDefaults, output: str = CLUSTER) -> dict[str, tuple[bool | None, str]]:
    found = check_job_defaults(defaults, parse_cluster_facts(output), "lab-profile")
    return {finding.option: (finding.ok, finding.detail) for finding in found}


@pytest.mark.parametrize(
    ("defaults", "option", "ok", "words"),
    [
        (JobDefaults(partition="gpu"), "partition", True, "exists"),
        (JobDefaults(partition="gpus"), "partition", False, "not exist on this cluster (it has: gpu, main)"),
        (JobDefaults(account="lab"), "account", True, "one of your Slurm associations"),
        (JobDefaults(account="labb"), "account", False, "(yours: lab, other)"),
        (JobDefaults(account="lab", qos="high"), "qos", True, "allowed"),
        (JobDefaults(account="other", qos="high"), "qos", False, "association (allowed: normal)"),
        (JobDefaults(partition="gpu", gres="gpu:1"), "gres", True, "offered in partition gpu"),
        (JobDefaults(partition="main", gres="gpu:1"), "gres", False, "not offered in partition main"),
        (JobDefaults(gres="tmpdisk:10"), "gres", True, "offered in any partition"),
    ],
)  # fmt: skip
def test_each_default_is_checked(defaults: JobDefaults, option: str, ok: bool, words: str) -> None:
    verdict, detail = _verdicts(defaults)[option]
    assert verdict is ok
    assert words in detail
    assert detail.endswith(".")
    if not ok:
        assert f"sl-server profile set lab-profile --{option} VALUE" in detail


def test_without_associations_a_qos_must_exist_and_an_account_is_wrong() -> None:
    output = _output("main|(null)\n", "", "", "normal\n")
    verdicts = _verdicts(JobDefaults(account="lab", qos="normal"), output)
    assert verdicts["account"][0] is False and "(yours: none)" in verdicts["account"][1]
    assert verdicts["qos"] == (True, "qos 'normal' exists.")
    assert _verdicts(JobDefaults(qos="fast"), output)["qos"][0] is False


def test_without_accounting_account_and_qos_are_not_verifiable_but_not_wrong() -> None:
    verdicts = _verdicts(JobDefaults(partition="main", account="lab", qos="normal"), NO_ACCOUNTING)
    assert verdicts["partition"][0] is True
    for option in ("account", "qos"):
        ok, detail = verdicts[option]
        assert ok is None
        assert "not verified" in detail and "accounting_storage plugin" in detail


def test_sshare_stands_in_for_sacctmgr() -> None:
    output = _output("main|(null)\n", "sacctmgr: error: no permission\n", "lab\n", "", accounting=False)
    assert parse_cluster_facts(output).associations == (("lab", ()),)
    assert _verdicts(JobDefaults(account="lab"), output)["account"][0] is True


def test_no_sinfo_answer_leaves_partition_unverified() -> None:
    facts = ClusterFacts(partitions=None, associations=(), qos=())
    (finding,) = check_job_defaults(JobDefaults(partition="main"), facts, "p")
    assert finding.ok is None and "sinfo did not answer" in finding.detail
