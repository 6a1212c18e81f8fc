"""Pure Slurm command builders and output parsers: no I/O, unit-tested with tables.

One polling cycle is ONE shell command. It runs ``squeue`` for live jobs (by id and by exact name)
and then the accounting source — ``sacct`` where the cluster has slurmdbd, else ``scontrol show job``
(which keeps finished jobs only for ``MinJobAge``) — and, for a probe, prints each tracker file.
Each part is framed by marker lines carrying its exit status, so one output parses unambiguously and
a part that failed is never mistaken for "no such job": a failed query makes the missing jobs
UNKNOWN, and only a clean answer makes them NOT_FOUND.
"""

from __future__ import annotations

import base64
import re
import shlex
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePosixPath

from sl_pipelines.core.seams import ProbeRequest, ProbeResult
from sl_pipelines.core.states import JobState, JobStatus
from sl_pipelines.errors import ConfigurationError, TransferError

MARKER = "@@SLP@@"
"""Prefix of the framing lines; Slurm never prints it and file contents are base64-encoded."""

SACCT_WINDOW = "now-7days"
"""How far back ``sacct`` looks for jobs found by name."""

_SQUEUE = "squeue -h -t all -o '%i|%T|%r|%j'"
_SACCT_FIELDS = "JobID,State,ExitCode,Reason,JobName"
_TOLERATED_SQUEUE = ("Invalid job id",)


class AccountingMode(StrEnum):
    """Where finished jobs are looked up."""

    SACCT = "sacct"
    SCONTROL = "scontrol"


@dataclass(frozen=True)
class Section:
    """One framed part of a combined command's output.

    Attributes:
        name: the part's label (``squeue-ids``, ``sacct-names``, ``file 0`` ...).
        lines: the lines printed between its markers (stdout and stderr together).
        status: the text after ``end`` — the exit status, ``missing``, or None when the output was cut.
    """

    name: str
    lines: tuple[str, ...]
    status: str | None

    @property
    def ok(self) -> bool:
        """True when the part ran to the end and exited 0."""
        return self.status == "0"


# ----------------------------------------------------------------------------------------- builders


def build_status_command(job_ids: Sequence[str], job_names: Sequence[str], mode: AccountingMode) -> str:
    """Returns ONE shell command that reports the state of every given job, live or finished.

    Args:
        job_ids: job ids to look up (``123`` or ``123_4``).
        job_names: exact job names to look up.
        mode: where finished jobs are looked up.

    Raises:
        ConfigurationError: an id is not a Slurm job id, or a name cannot be used in a name filter.
    """
    ids = ",".join(_check_id(job_id) for job_id in job_ids)
    names = ",".join(_check_name(name) for name in job_names)
    parts = []
    if ids:
        parts.append(_framed("squeue-ids", f"{_SQUEUE} -j {ids}"))
    if names:
        parts.append(_framed("squeue-names", f"{_SQUEUE} --name={shlex.quote(names)}"))
    if mode is AccountingMode.SACCT:
        sacct = f"sacct -X -n -P -S {SACCT_WINDOW} -o {_SACCT_FIELDS}"
        if ids:
            parts.append(_framed("sacct-ids", f"{sacct} -j {ids}"))
        if names:
            parts.append(_framed("sacct-names", f"{sacct} --name={shlex.quote(names)}"))
    elif ids or names:
        parts.append(_scontrol_part(job_ids, job_names))
    return "; ".join(parts) if parts else "true"


def build_probe_command(request: ProbeRequest, mode: AccountingMode) -> str:
    """Returns ONE shell command answering a :class:`ProbeRequest`: job states and tracker texts."""
    parts = [build_status_command(request.job_ids, request.job_names, mode)]
    for index, path in enumerate(request.tracker_paths):
        quoted = shlex.quote(str(path))
        parts.append(
            f"echo '{MARKER} begin file {index}'; if [ -f {quoted} ]; then "
            f'base64 -w0 -- {quoted} 2>/dev/null; _slp_rc=$?; echo; echo "{MARKER} end $_slp_rc"; '
            f"else echo '{MARKER} end missing'; fi"
        )
    return "; ".join(parts)


def _framed(name: str, command: str) -> str:
    return f"echo '{MARKER} begin {name}'; {command} 2>&1; echo \"{MARKER} end $?\""


def _scontrol_part(job_ids: Sequence[str], job_names: Sequence[str]) -> str:
    """``scontrol -o show job`` lists every job; grep keeps the candidate lines, the parser decides."""
    patterns = [f"JobId={job_id.split('_')[0]} " for job_id in job_ids]
    patterns += [f"ArrayJobId={job_id.split('_')[0]} " for job_id in job_ids]
    patterns += [f"JobName={name} UserId=" for name in job_names]
    grep = " ".join(f"-e {shlex.quote(pattern)}" for pattern in patterns)
    return (
        f"echo '{MARKER} begin scontrol'; _slp_out=$(scontrol -o show job 2>&1); _slp_rc=$?; "
        f"if [ $_slp_rc -eq 0 ]; then printf '%s\\n' \"$_slp_out\" | grep -F {grep}; "
        f'else printf \'%s\\n\' "$_slp_out"; fi; echo "{MARKER} end $_slp_rc"'
    )


def _check_id(job_id: str) -> str:
    if not re.fullmatch(r"\d+(_\d+)?", job_id):
        raise ConfigurationError(f"{job_id!r} is not a Slurm job id; use digits, or 123_4 for an array task.")
    return job_id


def _check_name(name: str) -> str:
    if not name or "," in name or re.search(r"[\x00-\x1f]", name):
        raise ConfigurationError(
            f"The job name {name!r} cannot be used in a Slurm name filter; avoid commas and line breaks."
        )
    return name


# ------------------------------------------------------------------------------------------ parsers


def split_sections(text: str) -> tuple[Section, ...]:
    """Splits a combined command's output at its marker lines."""
    sections: list[Section] = []
    name: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith(f"{MARKER} begin "):
            if name is not None:
                sections.append(Section(name, tuple(lines), None))
            name, lines = line[len(MARKER) + 7 :], []
        elif line.startswith(f"{MARKER} end") and name is not None:
            sections.append(Section(name, tuple(lines), line[len(MARKER) + 4 :].strip()))
            name = None
        elif name is not None:
            lines.append(line)
    if name is not None:
        sections.append(Section(name, tuple(lines), None))
    return tuple(sections)


def parse_status_output(
    text: str, *, job_ids: Sequence[str] = (), job_names: Sequence[str] = ()
) -> tuple[JobStatus, ...]:
    """Parses the output of :func:`build_status_command` into one status per job.

    A terminal state from sacct/scontrol beats squeue's view. Each requested id comes back exactly once:
    a parent array id absent from the output takes the combined state of its tasks; an id found nowhere
    is NOT_FOUND when every query answered cleanly and UNKNOWN (with the error as reason) otherwise.
    Jobs found by name follow the requested ids.

    Args:
        text: the command's output.
        job_ids: the ids that were asked for.
        job_names: the names that were asked for (``scontrol`` rows of other jobs are dropped).
    """
    live: dict[str, JobStatus] = {}
    final: dict[str, JobStatus] = {}
    problems: list[str] = []
    wanted = _Wanted(frozenset(job_ids), frozenset(job_names))
    for section in split_sections(text):
        records, problem = _parse_section(section)
        if problem:
            problems.append(problem)
        if section.name == "scontrol" and (job_ids or job_names):
            records = [status for status in records if wanted.matches(status)]
        target = live if section.name.startswith("squeue") else final
        for status in records:
            _keep_newest(target, status)
    return _with_requested(_merge(live, final), job_ids, problems)


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
    if section.ok or (section.name.startswith("squeue") and _only_tolerated(rest)):
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
    return all(any(word in line for word in _TOLERATED_SQUEUE) for line in meaningful)


def _squeue_row(line: str) -> JobStatus | None:
    fields = line.split("|", 3)
    if len(fields) != 4 or not re.fullmatch(r"\d+(_[\d\[\]\-,%]+)?", fields[0]):
        return None
    job_id, state_text, reason, name = fields
    state = JobState.parse(state_text)
    exit_code = 0 if state is JobState.COMPLETED else None  # squeue prints no exit code; COMPLETED means 0
    return JobStatus(job_id=job_id, name=name, state=state, exit_code=exit_code, reason=_clean_reason(reason))


def _sacct_row(line: str) -> JobStatus | None:
    fields = line.split("|", 4)
    if len(fields) != 5 or not re.fullmatch(r"\d+(_[\d\[\]\-,%]+)?", fields[0]):
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
    notes = [_clean_reason(reason)]
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


def parse_probe_output(text: str, request: ProbeRequest) -> ProbeResult:
    """Parses the output of :func:`build_probe_command` (one round trip).

    Raises:
        TransferError: a tracker file exists but could not be read, or its part of the output was cut.
    """
    jobs = parse_status_output(text, job_ids=request.job_ids, job_names=request.job_names)
    files = {section.name: section for section in split_sections(text) if section.name.startswith("file ")}
    trackers: dict[PurePosixPath, str | None] = {}
    for index, path in enumerate(request.tracker_paths):
        section = files.get(f"file {index}")
        if section is None or section.status is None:
            raise TransferError(f"The probe's answer for tracker {path} was cut off; probe again.", path=path)
        if section.status == "missing":
            trackers[path] = None
        elif section.ok:
            data = base64.b64decode("".join(section.lines).strip() or b"")
            trackers[path] = data.decode("utf-8", errors="replace")
        else:
            raise TransferError(
                f"Tracker {path} exists on the server but could not be read (exit code {section.status}); "
                "check its permissions.",
                path=path,
            )
    return ProbeResult(jobs=jobs, trackers=trackers, round_trips=1)
