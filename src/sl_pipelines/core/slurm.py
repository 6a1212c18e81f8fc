"""Pure parsers of what Slurm prints: squeue, sacct and scontrol rows, framed sections (no I/O).

The commands that produce this output are built in :mod:`sl_pipelines.core.probe` (a polling cycle)
and :mod:`sl_pipelines.core.sbatch` (a submission). Each part of a combined command is framed by marker
lines carrying its exit status, so one output parses unambiguously and a part that failed is never
mistaken for "no such job": a failed query makes missing jobs UNKNOWN, and only a clean answer makes
them NOT_FOUND.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from sl_pipelines.core.framing import Section, split_sections
from sl_pipelines.core.states import JobState, JobStatus

_TOLERATED = ("Invalid job id",)
"""What squeue/scontrol print for an id they no longer know: an answer ("no such job"), not a failure."""


class AccountingMode(StrEnum):
    """Where finished jobs are looked up."""

    SACCT = "sacct"
    SCONTROL = "scontrol"


# ------------------------------------------------------------------------------------------ parsers


def parse_status_output(
    text: str, *, job_ids: Sequence[str] = (), job_names: Sequence[str] = ()
) -> tuple[tuple[JobStatus, ...], tuple[str, ...]]:
    """Parses the Slurm parts of a probe's output into one status per job, and the parts that failed.

    A terminal state from sacct/scontrol beats squeue's view. Each requested id comes back exactly once:
    a parent array id absent from the output takes the combined state of its tasks; an id found nowhere
    is NOT_FOUND when every query answered cleanly and UNKNOWN (with the error as reason) otherwise.
    Jobs found by name follow the requested ids.

    Args:
        text: the command's output.
        job_ids: the ids that were asked for.
        job_names: the names that were asked for (``scontrol`` rows of other jobs are dropped).
    """
    return parse_status_sections(split_sections(text), job_ids=job_ids, job_names=job_names)


def parse_status_sections(
    sections: Iterable[Section],
    *,
    job_ids: Sequence[str] = (),
    job_names: Sequence[str] = (),
    failed: Sequence[str] = (),
) -> tuple[tuple[JobStatus, ...], tuple[str, ...]]:
    """:func:`parse_status_output` of an output already split at its markers (other parts are ignored);
    ``failed`` are problems found beforehand (a part that never ran): they come first, and make missing
    jobs UNKNOWN."""
    live: dict[str, JobStatus] = {}
    final: dict[str, JobStatus] = {}
    problems: list[str] = list(failed)
    wanted = _Wanted(frozenset(job_ids), frozenset(job_names))
    for section in sections:
        records, problem = _parse_section(section)
        if problem:
            problems.append(problem)
        if section.name == "scontrol" and (job_ids or job_names):
            records = [status for status in records if wanted.matches(status)]
        target = live if section.name.startswith("squeue") else final
        for status in records:
            _keep_newest(target, status)
    return _with_requested(_merge(live, final), job_ids, problems), tuple(problems)


def _keep_newest(statuses: dict[str, JobStatus], status: JobStatus) -> None:
    """Later rows are newer, but a REQUEUED row is always an older record of a requeued job."""
    known = statuses.get(status.job_id)
    if known is None or status.state is not JobState.REQUEUED or known.state is JobState.REQUEUED:
        statuses[status.job_id] = status


@dataclass(frozen=True)
class _Wanted:
    ids: frozenset[str]
    names: frozenset[str]

    def matches(self, status: JobStatus) -> bool:
        return status.name in self.names or bool({status.job_id, status.job_id.split("_")[0]} & self.ids)


def _parse_section(section: Section) -> tuple[list[JobStatus], str]:
    """Returns the section's records and a problem description ("" when it answered cleanly)."""
    if section.name.startswith("squeue"):
        records, rest = _parse_rows(section.lines, _squeue_row)
    elif section.name.startswith("sacct"):
        records, rest = _parse_rows(section.lines, _sacct_row)
    elif section.name == "scontrol":
        records, rest = _parse_rows(section.lines, _scontrol_row)
    else:
        return [], ""
    if section.status is None:
        return records, f"{section.name} output was cut off"
    if section.ok or (not section.name.startswith("sacct") and _only_tolerated(rest)):
        return records, ""
    detail = " ".join(line.strip() for line in rest if line.strip()) or "no message"
    return records, f"{section.name.split('-')[0]} exited {section.status}: {detail}"


def _parse_rows(
    lines: Iterable[str], parse_row: Callable[[str], JobStatus | None]
) -> tuple[list[JobStatus], list[str]]:
    records: list[JobStatus] = []
    rest: list[str] = []
    for line in lines:
        status = parse_row(line)
        if status is None:
            rest.append(line)
        else:
            records.append(status)
    return records, rest


def _only_tolerated(lines: Sequence[str]) -> bool:
    meaningful = [line for line in lines if line.strip()]
    return all(any(word in line for word in _TOLERATED) for line in meaningful)


_JOB_ID = re.compile(r"\d+(_[\d\[\]\-,%]+)?")

_ROWS_KEPT = 100_000
"""squeue rows whose parse is kept: a manager of a thousand runs reads the same 7,000 rows every cycle."""

_parsed_rows: dict[str, JobStatus | None] = {}


def _squeue_row(line: str) -> JobStatus | None:
    """One squeue row; the same row text always gives the same (immutable) status, so it is parsed once."""
    try:
        return _parsed_rows[line]
    except KeyError:
        pass
    if len(_parsed_rows) >= _ROWS_KEPT:
        _parsed_rows.clear()
    status = _parsed_rows[line] = _parse_squeue_row(line)
    return status


def _parse_squeue_row(line: str) -> JobStatus | None:
    fields = line.split("|", 3)
    if len(fields) != 4 or not _JOB_ID.fullmatch(fields[0]):
        return None
    job_id, state_text, reason, name = fields
    state = JobState.parse(state_text)
    exit_code = 0 if state is JobState.COMPLETED else None  # squeue prints no exit code; COMPLETED means 0
    notes = [_unknown_note(state, state_text), _clean_reason(reason)]
    reason_text = ", ".join(note for note in notes if note)
    return JobStatus(job_id=job_id, name=name, state=state, exit_code=exit_code, reason=reason_text)


def _unknown_note(state: JobState, state_text: str) -> str:
    """Keeps the state Slurm printed when this package does not know it."""
    return f"Slurm state {state_text.strip()!r}" if state is JobState.UNKNOWN else ""


def _sacct_row(line: str) -> JobStatus | None:
    fields = line.split("|", 4)
    if len(fields) != 5 or not _JOB_ID.fullmatch(fields[0]):
        return None
    job_id, state_text, exit_text, reason, name = fields
    return _status(job_id, name, state_text, exit_text, reason)


_SCONTROL_FIELD = re.compile(r"(?:^| )(\w+)=(\S*)")
_SCONTROL_NAME = re.compile(r" JobName=(.*?) UserId=")


def _scontrol_row(line: str) -> JobStatus | None:
    fields = dict(_SCONTROL_FIELD.findall(line))
    if "JobId" not in fields or "JobState" not in fields:
        return None
    name_match = _SCONTROL_NAME.search(line)
    name = name_match.group(1) if name_match else fields.get("JobName", "")
    job_id = fields["JobId"]
    array_id, task_id = fields.get("ArrayJobId"), fields.get("ArrayTaskId")
    if array_id and task_id:
        job_id = f"{array_id}_{task_id}"
    return _status(job_id, name, fields["JobState"], fields.get("ExitCode", ""), fields.get("Reason", ""))


def _status(job_id: str, name: str, state_text: str, exit_text: str, reason: str) -> JobStatus:
    """Builds a status; ``CANCELLED by 0`` keeps ``by 0`` and a signal (``0:9``) goes into the reason."""
    state = JobState.parse(state_text)
    notes = [_unknown_note(state, state_text), _clean_reason(reason)]
    detail = state_text.strip().split(" ", 1)[1:] if " " in state_text.strip() else []
    notes += detail
    exit_code: int | None = None
    match = re.fullmatch(r"(\d+):(\d+)", exit_text.strip())
    if match:
        exit_code = int(match.group(1))
        if int(match.group(2)):
            notes.append(f"signal {int(match.group(2))}")
    elif exit_text.strip():
        state = JobState.UNKNOWN
        notes.append(f"unreadable exit code {exit_text.strip()!r}")
    reason_text = ", ".join(note for note in notes if note)
    return JobStatus(job_id=job_id, name=name, state=state, exit_code=exit_code, reason=reason_text)


def _clean_reason(reason: str) -> str:
    reason = reason.strip()
    return "" if reason in ("None", "(null)") else reason


def _merge(live: dict[str, JobStatus], final: dict[str, JobStatus]) -> dict[str, JobStatus]:
    merged: dict[str, JobStatus] = {}
    for job_id in [*live, *(key for key in final if key not in live)]:
        accounted, seen = final.get(job_id), live.get(job_id)
        if accounted is not None and (accounted.state.is_terminal or seen is None):
            merged[job_id] = accounted
        elif seen is not None:
            merged[job_id] = seen
    return merged


def _with_requested(
    merged: dict[str, JobStatus], job_ids: Sequence[str], problems: list[str]
) -> tuple[JobStatus, ...]:
    result: dict[str, JobStatus] = {}
    for job_id in job_ids:
        if job_id in merged:
            result[job_id] = merged[job_id]
            continue
        tasks = [status for key, status in merged.items() if key.split("_")[0] == job_id]
        if tasks:
            result[job_id] = _combine_array(job_id, tasks)
        elif problems:
            result[job_id] = JobStatus(job_id, "", JobState.UNKNOWN, reason="; ".join(problems))
        else:
            result[job_id] = JobStatus(job_id, "", JobState.NOT_FOUND)
    for job_id, status in merged.items():
        result.setdefault(job_id, status)
    return tuple(result.values())


def _combine_array(job_id: str, tasks: Sequence[JobStatus]) -> JobStatus:
    """An array job as a whole: its first failure, else a running task, else an active one, else done."""
    tests: tuple[Callable[[JobStatus], bool], ...] = (
        lambda s: s.state.is_failure,
        lambda s: s.state is JobState.RUNNING,
        lambda s: not s.state.is_terminal,
    )
    for test in tests:
        for task in tasks:
            if test(task):
                return JobStatus(job_id, task.name, task.state, task.exit_code, f"task {task.job_id}")
    return JobStatus(job_id, tasks[0].name, JobState.COMPLETED, 0)
