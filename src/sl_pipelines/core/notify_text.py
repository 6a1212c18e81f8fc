"""What a notification says, and where it goes (pure: no I/O).

Three events are told: a pipeline failed (which pipeline and session, the reason, the failing job and the
tail of its stderr), a job or pipeline stalled (once per stall), and the run ended (counts per status, the
failures, and CPU-hours when the runs' usage records have them). A target is a webhook URL
(``https://…``, ``http://…``: a JSON POST of ``{"text": …}``, which Slack and Mattermost take) or
``mailto:address`` (an e-mail through the profile's SMTP server).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from sl_pipelines.errors import ConfigurationError

STDERR_LINES = 10
"""Lines of a failed job's stderr tail put into a failure message."""

SHOWN_FAILURES = 10
"""Failures listed by name in a run-end message; the others are counted."""


class TargetKind(StrEnum):
    """How a notification travels."""

    WEBHOOK = "webhook"
    MAIL = "mail"


@dataclass(frozen=True)
class NotifyTarget:
    """One place notifications go.

    Attributes:
        kind: a webhook or an e-mail.
        address: the URL, or the e-mail address (without ``mailto:``).
    """

    kind: TargetKind
    address: str

    @property
    def label(self) -> str:
        """How logs name it: a webhook by scheme and host only (its path is often a secret)."""
        if self.kind is TargetKind.MAIL:
            return f"mailto:{self.address}"
        parts = urlsplit(self.address)
        return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}/…"


_MAIL = re.compile(r"[^@\s,]+@[^@\s,]+")


def parse_target(text: str) -> NotifyTarget:
    """Reads a ``--notify`` value.

    Raises:
        ConfigurationError: neither an http(s) URL with a host nor ``mailto:`` with one address.
    """
    value = text.strip()
    if value.lower().startswith("mailto:"):
        address = value[len("mailto:") :]
        if not _MAIL.fullmatch(address):
            raise ConfigurationError(
                f"--notify {text!r} is not one e-mail address; write mailto:name@example.org.", key="notify"
            )
        return NotifyTarget(TargetKind.MAIL, address)
    parts = urlsplit(value)
    if parts.scheme.lower() in ("http", "https") and parts.hostname:
        return NotifyTarget(TargetKind.WEBHOOK, value)
    raise ConfigurationError(
        f"--notify {text!r} is neither a webhook URL (https://…) nor mailto:address; give one of those.",
        key="notify",
    )


@dataclass(frozen=True)
class Notice:
    """One message: a subject (the e-mail's) and its text (the webhook's, and the e-mail's body)."""

    subject: str
    text: str


@dataclass(frozen=True)
class RunFacts:
    """What a message says about one pipeline run.

    Attributes:
        pipeline: the pipeline's short name.
        sessions: ``project/animal/session`` of its sessions.
        token: the run token.
        status: RUNNING, SUCCEEDED, FAILED or ABORTED.
        reason: why it failed or was aborted ("" otherwise).
        failed_job: the job the failure is pinned on ("" when none).
        stderr_tail: the end of that job's stderr.
        usage: the run's usage records (``RunJournal.usage``: Slurm job id → figures), possibly empty.
    """

    pipeline: str
    sessions: tuple[str, ...]
    token: str
    status: str
    reason: str = ""
    failed_job: str = ""
    stderr_tail: str = ""
    usage: Mapping[str, Mapping[str, object]] | None = None

    @property
    def title(self) -> str:
        """``suite2p on proj/A1/2026-01-05 (run ab12cd)``."""
        return f"{self.pipeline} on {', '.join(self.sessions)} (run {self.token})"


def failure_notice(run: RunFacts, where: str) -> Notice:
    """The message sent when a pipeline fails."""
    lines = [f"sl_pipelines on {where}: {run.title} {run.status}.", f"Reason: {run.reason or 'not given'}"]
    if run.failed_job:
        lines.append(f"Failing job: {run.failed_job}")
    tail = run.stderr_tail.strip().splitlines()[-STDERR_LINES:]
    if tail:
        lines.append("End of its stderr:")
        lines.extend(f"    {line}" for line in tail)
    return Notice(f"[sl_pipelines] {run.status}: {run.pipeline} {', '.join(run.sessions)}", "\n".join(lines))


def stall_notice(run: RunFacts, detail: str, where: str) -> Notice:
    """The message sent once when a job or pipeline of a run stalls."""
    text = f"sl_pipelines on {where}: {run.title} looks stalled: {detail}."
    return Notice(f"[sl_pipelines] stalled: {run.pipeline} {', '.join(run.sessions)}", text)


def run_end_notice(runs: Sequence[RunFacts], where: str, elapsed_s: float) -> Notice:
    """The message sent when a manager's run of pipelines ends: counts per status, failures, CPU-hours."""
    counts = Counter(run.status for run in runs)
    summary = ", ".join(f"{n} {status.lower()}" for status, n in sorted(counts.items()))
    kinds = "/".join(sorted({run.pipeline for run in runs})) or "no"
    ended = f"{len(runs)} {kinds} pipeline(s) ended after {_span(elapsed_s)}"
    lines = [f"sl_pipelines on {where}: {ended}: {summary or 'nothing ran'}."]
    hours = cpu_hours(run.usage for run in runs)
    if hours is not None:
        lines.append(f"CPU time used: {hours:.2f} CPU-hours.")
    failed = [run for run in runs if run.status in ("FAILED", "ABORTED")]
    for run in failed[:SHOWN_FAILURES]:
        job = f" [{run.failed_job}]" if run.failed_job else ""
        lines.append(f"- {run.title} {run.status}{job}: {run.reason or 'no reason given'}")
    if len(failed) > SHOWN_FAILURES:
        lines.append(f"- … and {len(failed) - SHOWN_FAILURES} more")
    return Notice(f"[sl_pipelines] run ended: {summary or 'nothing ran'} ({kinds})", "\n".join(lines))


def cpu_hours(usages: Iterable[Mapping[str, Mapping[str, object]] | None]) -> float | None:
    """CPU-hours summed over usage records (``cpu_s`` of each job), or None when no record has them."""
    seconds, found = 0.0, False
    for usage in usages:
        for entry in (usage or {}).values():
            value = entry.get("cpu_s") if isinstance(entry, Mapping) else None
            if isinstance(value, int | float) and not isinstance(value, bool):
                seconds, found = seconds + float(value), True
    return seconds / 3600.0 if found else None


def _span(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {rest:02d} s"
