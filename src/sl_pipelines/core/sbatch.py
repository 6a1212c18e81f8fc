"""A cycle's submissions as ONE remote command: a fixed bash program fed the job scripts on stdin (pure).

Standard input carries, for each job, its script path and its script text (NUL-separated), so the
command line stays small for one job or thousands. For each job in turn the program creates the job
folder, writes the script atomically and runs ``sbatch --parsable``; each job's part is framed by marker
lines carrying the outcome (``write`` when the script could not be written, else sbatch's exit status).
When sbatch fails for a passing reason (the controller does not answer, a submit limit) the program
stops, so an unreachable controller costs one timeout, not one per job.

:func:`classify_submission` turns the output into a :class:`SubmissionReport`: submitted, refused
(permanent: fails the pipeline), deferred (certainly not submitted: try later) or unknown (look the
job up by name before trying again).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from pathlib import PurePosixPath

from sl_pipelines.core.seams import SubmissionReport
from sl_pipelines.core.slurm import Section, split_sections
from sl_pipelines.core.wire import MARKER
from sl_pipelines.errors import SubmissionError

_SBATCH_PARSABLE = re.compile(r"^(\d+(?:_\d+)?)(?:;\S+)?$")
_SBATCH_SENTENCE = re.compile(r"Submitted batch job (\d+)")

NOT_SUBMITTED = (
    "Unable to contact slurm controller",
    "Slurm temporarily unable to accept job",
    "Resource temporarily unavailable",
    "Job violates accounting/QOS policy",
    "AssocMaxSubmitJobLimit",
    "QOSMaxSubmitJobPerUserLimit",
    "MaxSubmitJobs",
    "Too many jobs",
)
"""sbatch messages after which the job was certainly not submitted, for a passing reason: try later."""

MAYBE_SUBMITTED = ("Socket timed out", "Zero Bytes were transmitted", "Connection reset", "Broken pipe")
"""sbatch messages after which the job may or may not exist: look it up by name before trying again."""

_STOP_PATTERN = "|".join(re.escape(text) for text in (*NOT_SUBMITTED, *MAYBE_SUBMITTED))

SUBMIT_PROGRAM = r"""set +e
export LC_ALL=C
M='@@MARK@@'; i=0
while IFS= read -r -d '' path && IFS= read -r -d '' body; do
  echo "$M begin job $i"; i=$((i+1)); tmp="$path.tmp.$$"
  if ! { mkdir -p -- "${path%/*}" && printf '%s' "$body" > "$tmp" && mv -f -- "$tmp" "$path"; } 2>&1; then
    rm -f -- "$tmp" 2>/dev/null; echo "$M end write"; continue
  fi
  out=$(sbatch --parsable "$path" 2>&1); rc=$?
  printf '%s\n' "$out"; echo "$M end $rc"
  if [ $rc -ne 0 ] && printf '%s' "$out" | grep -q -E '@@STOP@@'; then break; fi
done
""".replace("@@MARK@@", MARKER).replace("@@STOP@@", _STOP_PATTERN.replace("'", "'\\''"))


def build_submit(scripts: Sequence[tuple[PurePosixPath, str]]) -> tuple[str, bytes]:
    """Returns the submission's command line (always the same) and its standard input.

    Args:
        scripts: (script path, script text) of each job, in submission order.

    Raises:
        SubmissionError: a path or script contains a NUL character (it could not be sent).
    """
    records: list[str] = []
    for path, text in scripts:
        if "\0" in str(path) or "\0" in text or not str(path).startswith("/"):
            raise SubmissionError(
                f"Job script {path} cannot be sent: its path must be absolute and neither it nor the "
                "script may contain a NUL character.",
                job_name=path.stem,
            )
        records += [str(path), text]
    command = f"bash -c {shlex.quote(SUBMIT_PROGRAM)} sl-submit"
    return command, "".join(f"{record}\0" for record in records).encode("utf-8")


def parse_sbatch_output(text: str, job_name: str) -> str:
    """Returns the job id printed by ``sbatch --parsable`` (or by plain ``sbatch``).

    Tolerates a ``;cluster`` suffix, site banners and warnings around the id.

    Raises:
        SubmissionError: no job id could be found in the output.
    """
    for line in reversed(text.strip().splitlines()):
        match = _SBATCH_PARSABLE.match(line.strip())
        if match:
            return match.group(1)
    sentence = _SBATCH_SENTENCE.search(text)
    if sentence:
        return sentence.group(1)
    summary = " ".join(text.split()) or "no output"
    raise SubmissionError(
        f"sbatch did not return a job id for job {job_name!r} (it said: {summary}); check the job's "
        "resources and the partition, then submit again.",
        job_name=job_name,
        output=text,
    )


def classify_submission(
    text: str, jobs: Sequence[tuple[str, PurePosixPath]], *, completed: bool
) -> SubmissionReport:
    """Sorts every job of a submission by what its part of the output says.

    Args:
        text: the submission command's output.
        jobs: (job name, script path) of each job, in the order they were sent.
        completed: False when the command did not finish (the connection dropped): a job whose part is
            missing or cut off may then have been submitted.
    """
    sections = {s.name: s for s in split_sections(text)}
    submitted: dict[str, str] = {}
    refused: dict[str, str] = {}
    deferred: dict[str, str] = {}
    unknown: list[str] = []
    stop_reason = ""
    for index, (name, path) in enumerate(jobs):
        section = sections.get(f"job {index}")
        if section is None or section.status is None:
            if completed and section is None:
                deferred[name] = f"not tried: {stop_reason or 'the submission stopped early'}"
            else:
                unknown.append(name)
            continue
        output = " ".join(line.strip() for line in section.lines if line.strip())
        kind = _outcome(section, name, output)
        if kind == "submitted":
            submitted[name] = parse_sbatch_output("\n".join(section.lines), name)
        elif kind == "write":
            refused[name] = f"Could not write job script {path}: {output or 'no message'}"
        elif kind == "deferred":
            deferred[name] = stop_reason = f"sbatch said: {output}"
        elif kind == "unknown":
            unknown.append(name)
            stop_reason = f"sbatch said: {output}"
        else:
            refused[name] = f"Slurm refused job {name}: {output or 'no message'}"
    return SubmissionReport(submitted, refused, deferred, tuple(unknown), round_trips=1)


def _outcome(section: Section, name: str, output: str) -> str:
    if section.status == "write":
        return "write"
    if section.ok:
        try:
            parse_sbatch_output("\n".join(section.lines), name)
        except SubmissionError:
            return "unknown"  # sbatch exited 0 without an id we can read: it may have submitted the job
        return "submitted"
    if any(text in output for text in MAYBE_SUBMITTED):
        return "unknown"
    if any(text in output for text in NOT_SUBMITTED):
        return "deferred"
    return "refused"
