"""Checking a profile's job defaults (partition, account, qos, gres) against what the cluster says.

:data:`FACTS_COMMAND` asks, in one remote command with framed sections, ``sinfo`` for the partitions and
their generic resources, and ``sacctmgr`` (or ``sshare`` when ``sacctmgr`` does not answer) for the user's
associations and the cluster's QOS. :func:`check_job_defaults` turns the answer into one finding per
option that is set: right, wrong (with one sentence saying why and what exists), or not verifiable
(the cluster has no accounting database to ask).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sl_pipelines.core.framing import MARKER, Section, split_sections
from sl_pipelines.core.job import JobDefaults


def _framed(name: str, command: str) -> str:
    return f"echo '{MARKER} begin {name}'; {command}; echo \"{MARKER} end $?\""


FACTS_COMMAND = "; ".join(
    (
        _framed("partitions", "sinfo -h -o '%R|%G' 2>&1"),
        _framed("associations", 'sacctmgr -n -P show assoc user="$(id -un)" format=account,qos 2>&1'),
        _framed("shares", "sshare -h -P -U -o account 2>&1"),
        _framed("qos", "sacctmgr -n -P show qos format=name 2>&1"),
    )
)
"""One command whose framed sections :func:`parse_cluster_facts` reads (a login banner is ignored)."""


@dataclass(frozen=True)
class ClusterFacts:
    """What the cluster says about partitions, associations and QOS.

    Attributes:
        partitions: partition name → the generic resources its nodes offer (``gpu:a100:4``), or None when
            ``sinfo`` did not answer.
        associations: (account, allowed QOS) of each of the user's associations, or None when neither
            ``sacctmgr`` nor ``sshare`` answered.
        qos: every QOS the cluster knows, or None when ``sacctmgr`` did not answer.
        problem: why the accounting queries did not answer (empty when they did).
    """

    partitions: dict[str, tuple[str, ...]] | None
    associations: tuple[tuple[str, tuple[str, ...]], ...] | None
    qos: tuple[str, ...] | None
    problem: str = ""


@dataclass(frozen=True)
class DefaultFinding:
    """The verdict on one job default: ``ok`` True (right), False (wrong) or None (not verifiable)."""

    option: str
    value: str
    ok: bool | None
    detail: str


def parse_cluster_facts(stdout: str) -> ClusterFacts:
    """Reads the output of :data:`FACTS_COMMAND`."""
    sections = {section.name: section for section in split_sections(stdout)}
    partitions = _partitions(sections.get("partitions"))
    associations = _associations(sections.get("associations"))
    problem = ""
    if associations is None:
        problem = _said(sections.get("associations"))
        associations = _shares(sections.get("shares"))
    qos_section = sections.get("qos")
    qos = _lines(qos_section) if qos_section is not None and qos_section.ok else None
    return ClusterFacts(partitions, associations, tuple(qos) if qos is not None else None, problem)


def check_job_defaults(
    defaults: JobDefaults, facts: ClusterFacts, profile: str
) -> tuple[DefaultFinding, ...]:
    """One finding per option set in ``defaults``; ``profile`` names the profile in the advice."""
    checks = {"partition": _partition, "account": _account, "qos": _qos, "gres": _gres}
    findings = []
    for option, value in defaults.items():
        ok, detail = checks[option](value, defaults, facts)
        if ok is False:
            detail += f"; fix it with 'sl-server profile set {profile} --{option} VALUE'"
        findings.append(DefaultFinding(option, value, ok, detail + "."))
    return tuple(findings)


# ------------------------------------------------------------------------------------------ verdicts

_Verdict = tuple[bool | None, str]


def _partition(value: str, defaults: JobDefaults, facts: ClusterFacts) -> _Verdict:
    if facts.partitions is None:
        return None, f"partition {value!r} not verified: sinfo did not answer"
    if value in facts.partitions:
        return True, f"partition {value!r} exists"
    return False, f"partition {value!r} does not exist on this cluster (it has: {_names(facts.partitions)})"


def _gres(value: str, defaults: JobDefaults, facts: ClusterFacts) -> _Verdict:
    if facts.partitions is None:
        return None, f"gres {value!r} not verified: sinfo did not answer"
    where = [defaults.partition] if defaults.partition in facts.partitions else list(facts.partitions)
    offered = {item.split(":", 1)[0] for name in where for item in facts.partitions[name]}
    scope = f"partition {where[0]}" if len(where) == 1 else "any partition"
    if value.split(":", 1)[0] in offered:
        return True, f"gres {value!r} is offered in {scope}"
    return False, f"gres {value!r} is not offered in {scope} (it offers: {_names(offered)})"


def _account(value: str, defaults: JobDefaults, facts: ClusterFacts) -> _Verdict:
    if facts.associations is None:
        return None, f"account {value!r} not verified: the cluster has no accounting to ask ({facts.problem})"
    accounts = {account for account, _ in facts.associations}
    if value in accounts:
        return True, f"account {value!r} is one of your Slurm associations"
    return False, f"account {value!r} is not one of your Slurm associations (yours: {_names(accounts)})"


def _qos(value: str, defaults: JobDefaults, facts: ClusterFacts) -> _Verdict:
    mine = [qos for account, qos in facts.associations or () if defaults.account in (None, account)]
    if mine:
        allowed = {name for names in mine for name in names}
        if value in allowed:
            return True, f"qos {value!r} is allowed for your association"
        return False, f"qos {value!r} is not allowed for your association (allowed: {_names(allowed)})"
    if facts.qos is None:
        return None, f"qos {value!r} not verified: the cluster has no accounting to ask ({facts.problem})"
    if value in facts.qos:
        return True, f"qos {value!r} exists"
    return False, f"qos {value!r} does not exist on this cluster (it has: {_names(facts.qos)})"


# ------------------------------------------------------------------------------------------ parsing


def _lines(section: Section) -> list[str]:
    return [line.strip() for line in section.lines if line.strip()]


def _said(section: Section | None) -> str:
    if section is None:
        return "no answer"
    return " ".join(" ".join(section.lines).split())[:160] or f"exit {section.status}"


def _partitions(section: Section | None) -> dict[str, tuple[str, ...]] | None:
    if section is None or not section.ok:
        return None
    found: dict[str, set[str]] = {}
    for line in _lines(section):
        name, _, gres = line.partition("|")
        items = {item.split("(")[0] for item in gres.split(",") if item and item != "(null)"}
        found.setdefault(name, set()).update(items)
    return {name: tuple(sorted(items)) for name, items in found.items()}


def _associations(section: Section | None) -> tuple[tuple[str, tuple[str, ...]], ...] | None:
    if section is None or not section.ok:
        return None
    rows = []
    for line in _lines(section):
        account, _, qos = line.partition("|")
        rows.append((account, tuple(name for name in qos.split(",") if name)))
    return tuple(rows)


def _shares(section: Section | None) -> tuple[tuple[str, tuple[str, ...]], ...] | None:
    if section is None or not section.ok:
        return None
    accounts = _lines(section)
    return tuple((account, ()) for account in accounts) if accounts else None


def _names(values: Sequence[str] | set[str] | dict[str, tuple[str, ...]]) -> str:
    names = sorted(values)
    return ", ".join(names) if names else "none"
