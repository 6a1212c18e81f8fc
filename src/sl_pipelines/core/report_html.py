"""The run report: one self-contained HTML page from a run's record (pure: no I/O).

The page needs nothing from the network (inline CSS, no scripts, no fonts): a timeline of every job per
stage (queued and running as bars, coloured by outcome, one row per attempt), the resource-use table
with bars of used against requested (memory, CPU efficiency, time), and the failures with the tail of
their stderr. Every text from the record is HTML-escaped: a session may be named ``<b>&$(rm)``.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from sl_pipelines.core.report_model import Attempt, RunView, parse_time, view_run

_STYLE = """
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#1d2330;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde}
h3{font-size:14px;margin:14px 0 4px;color:#444}
.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:10px 0}
.facts dt{color:#667}.facts dd{margin:0}
.status{display:inline-block;padding:1px 8px;border-radius:9px;color:#fff;font-weight:600}
.status-SUCCEEDED{background:#2e8540}.status-FAILED{background:#c0392b}.status-ABORTED{background:#8e44ad}
.status-RUNNING{background:#d68910}.status-UNKNOWN{background:#7f8c8d}
.legend span{display:inline-block;margin-right:14px}.legend i{display:inline-block;width:14px;height:10px;
margin-right:4px;border-radius:2px;vertical-align:middle}
.timeline{border:1px solid #e3e5ea;border-radius:6px;padding:6px 10px 10px}
.axis,.job-bar{display:grid;grid-template-columns:320px 1fr 130px;gap:8px;align-items:center}
.axis{color:#889;font-size:11px}.ticks{position:relative;height:14px}
.ticks span{position:absolute;transform:translateX(-50%);white-space:nowrap}
.job-bar{min-height:20px;border-top:1px dotted #eef}.label{white-space:nowrap;overflow:hidden;
text-overflow:ellipsis;font-size:12px}.track{position:relative;height:14px;background:#f4f5f8;border-radius:3px}
.seg{position:absolute;top:0;bottom:0;border-radius:3px;min-width:3px}
.queued{background:repeating-linear-gradient(45deg,#c9cfdb,#c9cfdb 3px,#e1e5ee 3px,#e1e5ee 6px)}
.ok{background:#2e8540}.failed{background:#c0392b}.cancelled{background:#95a5a6}.active{background:#2874a6}
.unknown{background:#bdc3c7}.untimed{left:0;right:0;opacity:.55}.approx{opacity:.55}
.state{font-size:12px;font-weight:600}.state.ok,.state.failed,.state.cancelled,.state.active,
.state.unknown{background:none}.state.ok{color:#2e8540}.state.failed{color:#c0392b}
.state.cancelled{color:#7f8c8d}.state.active{color:#2874a6}.state.unknown{color:#7f8c8d}
.note{color:#667;font-size:12px}
table{border-collapse:collapse;font-size:12px}
th,td{white-space:nowrap;padding:3px 8px;text-align:left;border-bottom:1px solid #eee}
th{background:#f4f5f8;white-space:normal}td.num{text-align:right;font-variant-numeric:tabular-nums}
.meter{display:inline-block;width:70px;height:9px;background:#eceef2;border-radius:2px;margin-right:6px;
vertical-align:middle;position:relative;overflow:hidden}.meter b{position:absolute;left:0;top:0;bottom:0;
background:#2874a6}.meter b.low{background:#d68910}.meter b.over{background:#c0392b}
pre{background:#1d2330;color:#e8eaf0;padding:8px 10px;border-radius:5px;overflow:auto;font-size:12px;
max-height:320px;white-space:pre-wrap}
footer{margin-top:30px;color:#99a;font-size:11px}
"""
_OUTCOMES = (
    ("ok", "completed"),
    ("failed", "failed"),
    ("cancelled", "cancelled"),
    ("active", "queued or running now"),
    ("unknown", "state not known"),
)


def render_report(
    record: Mapping[str, Any],
    *,
    states: Mapping[str, str] | None = None,
    stderr_tails: Mapping[str, str] | None = None,
    generated_at: str = "",
    failed_job: str = "",
) -> str:
    """The report page of one run.

    Args:
        record: the run record's data (``json.loads`` of ``run.json``); missing keys are tolerated.
        states: Slurm's state by job id, where it was asked.
        stderr_tails: the tail of a failed job's stderr, by job name.
        generated_at: when the report was made (ISO 8601); the end of a still-running job's bar.
        failed_job: the job the run's failure is pinned on (default: the one the record's reason names).
    """
    view = view_run(record, states, failed_job)
    title = f"{record.get('pipeline', 'run')} run {view.token}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
        _header(view, title),
        _timeline(view, parse_time(generated_at)),
        _usage_table(view),
        _failures(view, stderr_tails or {}),
        f"<footer>sl_pipelines run report · made {_e(generated_at or '?')}</footer>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def element_id(attempt: Attempt) -> str:
    """The timeline row's ``id``: the job key and attempt, in characters an id may hold."""
    return "job-" + re.sub(r"[^A-Za-z0-9_-]", "_", f"{attempt.stage}-{attempt.key}-{attempt.attempt}")


# ------------------------------------------------------------------------------------------- header
def _header(view: RunView, title: str) -> str:
    r = view.record
    started = _mapping(r.get("started_by"))
    who = " ".join(str(started[k]) for k in ("user", "host", "at") if started.get(k))
    counts: dict[str, int] = {}
    for attempt in view.attempts:
        counts[attempt.outcome] = counts.get(attempt.outcome, 0) + 1
    jobs = ", ".join(f"{n} {label}" for key, label in _OUTCOMES if (n := counts.get(key)))
    facts = [
        ("status", f'<span class="status status-{_e(_status_class(view.status))}">{_e(view.status)}</span>'),
        ("reason", _e(r.get("reason") or "")),
        ("sessions", "<br>".join(_e(s) for s in r.get("sessions") or ())),
        ("stage", _e(f"{r.get('stage', 0)} of {len(view.stage_names) or '?'}")),
        (
            "jobs",
            _e(
                f"{_count(len({a.name for a in view.attempts}), 'job')}, "
                f"{_count(len(view.attempts), 'attempt')}: {jobs}"
            ),
        ),
        ("server", _e(r.get("backend") or "")),
        ("mode", _e(r.get("mode") or "")),
        ("started by", _e(who)),
        ("last update", _e(r.get("updated_at") or "")),
        ("run token", _e(view.token)),
        ("manager id", _e(r.get("manager_id") or "")),
    ]
    rows = "".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in facts if value)
    return f'<h1>{_e(title)}</h1><dl class="facts">{rows}</dl>'


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _status_class(status: str) -> str:
    return status if status in ("SUCCEEDED", "FAILED", "ABORTED", "RUNNING") else "UNKNOWN"


# ----------------------------------------------------------------------------------------- timeline
def _timeline(view: RunView, now: datetime | None) -> str:
    times = [t for a in view.attempts for t in (a.submitted, a.started, a.ended) if t is not None]
    if now is not None and any(a.outcome == "active" for a in view.attempts):
        times.append(now)
    updated = parse_time(view.record.get("updated_at"))
    if times and updated is not None:  # the record's last write: when the run ended, if it did
        times.append(updated)
    span = (min(times), max(times)) if times else None
    legend = "".join(f'<span><i class="{key}"></i>{label}</span>' for key, label in _OUTCOMES)
    legend += '<span><i class="queued"></i>waiting in the queue</span>'
    out = ["<h2>Timeline</h2>", f'<div class="legend note">{legend}</div>', '<div class="timeline">']
    if span is None:
        out.append(
            '<p class="note">No job times are recorded for this run: each bar shows only the outcome.</p>'
        )
    else:
        out.append(_axis(span))
    retried = _retried_at(view)
    for stage in view.stages():
        out.append(f'<h3 class="stage">Stage {_e(view.stage_label(stage))}</h3>')
        rows = [
            _bar(a, span, now, retried.get((a.name, a.attempt))) for a in view.attempts if a.stage == stage
        ]
        out.extend(rows or ['<p class="note">not submitted</p>'])
    out.append("</div>")
    return "\n".join(out)


def _axis(span: tuple[datetime, datetime]) -> str:
    total = (span[1] - span[0]).total_seconds()
    ticks = "".join(
        f'<span style="left:{p}%">+{_e(duration(total * p / 100))}</span>' for p in (0, 25, 50, 75, 100)
    )
    start = span[0].strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        f'<div class="axis"><span>from {_e(start)}</span><div class="ticks">{ticks}</div><span></span></div>'
    )


def _retried_at(view: RunView) -> dict[tuple[str, int], datetime]:
    """(job, attempt) → when the job's next attempt was submitted (this one had ended by then)."""
    found: dict[tuple[str, int], datetime] = {}
    previous: Attempt | None = None
    for a in view.attempts:  # in order: a job's attempts follow each other
        if previous is not None and previous.name == a.name and a.submitted is not None:
            found[(previous.name, previous.attempt)] = a.submitted
        previous = a
    return found


def _bar(
    a: Attempt, span: tuple[datetime, datetime] | None, now: datetime | None, until: datetime | None
) -> str:
    label = f"{a.key} · attempt {a.attempt}" + (f" · job {a.job_id}" if a.job_id else "")
    segments = _segments(a, span, now, until)
    title = " · ".join(x for x in (a.state or "state not known", a.reason) if x)
    return (
        f'<div class="job-bar" id="{element_id(a)}" data-job="{_e(a.name)}" data-outcome="{a.outcome}">'
        f'<div class="label" title="{_e(a.name)}">{_e(label)}</div><div class="track">{segments}</div>'
        f'<div class="state {a.outcome}" title="{_e(title)}">{_e(a.state or "?")}</div></div>'
    )


def _segments(
    a: Attempt, span: tuple[datetime, datetime] | None, now: datetime | None, until: datetime | None
) -> str:
    """The queued and running parts of one attempt's bar (the whole track when its times are unknown;
    from its submission to ``until``, its retry, or the end when only its submission is known)."""
    if span is None or (a.submitted is None and a.started is None):
        return f'<span class="seg untimed {a.outcome}" title="{_e(a.state or "state not known")}"></span>'
    total = max((span[1] - span[0]).total_seconds(), 1e-9)
    began = a.started or a.submitted or span[0]
    end = a.ended or (now if a.outcome == "active" and now is not None else began)

    def place(start: datetime, stop: datetime) -> str:
        left = max(0.0, (start - span[0]).total_seconds() / total * 100)
        width = max(0.0, min(100 - left, (stop - start).total_seconds() / total * 100))
        return f"left:{left:.2f}%;width:{width:.2f}%"

    if a.started is None and a.submitted is not None and a.outcome != "active":  # only its submission known
        return (
            f'<span class="seg approx {a.outcome}" style="{place(a.submitted, a.ended or until or span[1])}" '
            f'title="{_e(a.state or "state not known")}: submitted; when it ran is not recorded"></span>'
        )
    out = []
    if a.submitted is not None:
        queued_end = a.started or end
        wait = (queued_end - a.submitted).total_seconds()
        out.append(
            f'<span class="seg queued" style="{place(a.submitted, queued_end)}" '
            f'title="queued {_e(duration(wait))}"></span>'
        )
    if a.started is not None:
        ran = (end - a.started).total_seconds()
        out.append(
            f'<span class="seg {a.outcome}" style="{place(a.started, end)}" '
            f'title="{_e(a.state or "running")} after {_e(duration(ran))}"></span>'
        )
    return "".join(out)


# ------------------------------------------------------------------------------------- resource use
_USAGE_COLUMNS = (
    "job",
    "attempt",
    "node",
    "state",
    "memory used / requested",
    "CPU efficiency",
    "time used / limit",
    "queue wait",
    "CPU time",
)


def _usage_table(view: RunView) -> str:
    used = [a for a in view.attempts if a.usage]
    head = "<h2>Resource use</h2>"
    if not used:
        return (
            head + '<p class="note">No resource use is recorded for this run (it records what its jobs '
            "used once they end, where the cluster or the job reports it).</p>"
        )
    rows = [f"<tr>{''.join(f'<th>{c}</th>' for c in _USAGE_COLUMNS)}</tr>"]
    for stage in view.stages():
        stage_rows = [a for a in used if a.stage == stage]
        if stage_rows:
            rows.append(
                f'<tr><th colspan="{len(_USAGE_COLUMNS)}">Stage {_e(view.stage_label(stage))}</th></tr>'
            )
            rows.extend(_usage_row(a) for a in stage_rows)
    cpu = sum(_number(a.usage.get("cpu_s")) for a in used) / 3600
    booked = sum(_number(a.usage.get("elapsed_s")) * _number(a.usage.get("cpus")) for a in used) / 3600
    share = f" ({cpu / booked:.0%} of the {booked:.3g} CPU-hours held)" if booked else ""
    total = f'<p class="note">CPU time used: {cpu:.3g} CPU-hours{_e(share)}.</p>'
    return head + f'<table class="usage">{"".join(rows)}</table>' + total


def _usage_row(a: Attempt) -> str:
    """One attempt's figures; a figure its source did not give shows as a dash (no bar)."""
    u = a.usage
    rss, asked = _figure(u, "max_rss_mb"), _figure(u, "requested_memory_mb")
    elapsed, limit = _figure(u, "elapsed_s"), _figure(u, "time_limit_minutes")
    efficiency, cpus = _figure(u, "cpu_efficiency"), _figure(u, "cpus")
    wait, cpu = _figure(u, "queue_wait_s"), _figure(u, "cpu_s")
    per_cpu = f" of {cpus:.0f} CPU{'s' if cpus != 1 else ''}" if cpus is not None else ""
    cells = [
        _e(a.key),
        str(a.attempt),
        _e(u.get("node") or ""),
        f'<span class="state {a.outcome}">{_e(a.state or "?")}</span>',
        _meter(rss, asked, _of(rss, asked, _mb)),
        _meter(efficiency, 1.0, f"{efficiency or 0:.0%}{per_cpu}"),
        _meter(
            elapsed, limit * 60 if limit is not None else None, _of(elapsed, limit and limit * 60, duration)
        ),
        _e(duration(wait)) if wait is not None else _MISSING,
        _e(duration(cpu)) if cpu is not None else _MISSING,
    ]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


_MISSING = '<span class="note">&ndash;</span>'


def _of(value: float | None, whole: float | None, unit: Callable[[float], str]) -> str:
    """``1.1 GB of 80 GB``, or the value alone when there is no whole."""
    if value is None:
        return ""
    return f"{unit(value)} of {unit(whole)}" if whole else unit(value)


def _meter(value: float | None, whole: float | None, words: str) -> str:
    """A bar of ``value`` against ``whole`` (red past it, amber under a quarter of it) and its words."""
    if value is None:
        return _MISSING
    if whole is None or whole <= 0:
        return _e(words)
    share = value / whole
    kind = "over" if share > 1 else "low" if share < 0.25 else ""
    return (
        f'<span class="meter" title="{share:.0%}"><b class="{kind}" style="width:{min(share, 1) * 100:.1f}%">'
        f"</b></span>{_e(words)}"
    )


# ----------------------------------------------------------------------------------------- failures
def _failures(view: RunView, tails: Mapping[str, str]) -> str:
    failed = [a for a in view.attempts if a.outcome == "failed" or (a.name in tails and a.outcome != "ok")]
    reason = str(view.record.get("reason") or "")
    if not failed and not reason:
        return '<h2>Failures</h2><p class="note">None.</p>'
    out = ["<h2>Failures</h2>"]
    if reason:
        out.append(f'<p class="reason">{_e(reason)}</p>')
    last = {a.name: a for a in failed}  # the job folder's stderr is its latest attempt's
    for a in failed:
        detail = f" ({a.reason})" if a.reason else ""
        out.append(
            f'<h3 class="failure" id="failure-{element_id(a)}">{_e(a.key)} · attempt {a.attempt} · '
            f"{_e(a.state or 'state not known')}{_e(detail)}</h3>"
        )
        if last[a.name] is not a:
            continue
        tail = tails.get(a.name, "")
        out.append(f"<pre>{_e(tail)}</pre>" if tail else '<p class="note">No stderr output was found.</p>')
    return "\n".join(out)


# ------------------------------------------------------------------------------------------ numbers
def duration(seconds: float) -> str:
    """``850 ms``, ``12 s``, ``3m05s``, ``2h03m``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.3g} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _mb(value: float) -> str:
    return f"{value / 1024:.3g} GB" if value >= 1024 else f"{value:.3g} MB"


def _figure(usage: Mapping[str, Any], key: str) -> float | None:
    """A usage figure, or None when its source did not give it."""
    value = usage.get(key)
    return _number(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
