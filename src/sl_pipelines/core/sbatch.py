"""A cycle's submissions as ONE remote command: a fixed bash program fed everything on stdin (pure).

Standard input carries NUL-separated records: ``F path text`` (a script to write atomically), ``L link
target`` (a log link of an array task) and ``S index path`` (submit this script as submission
``index``), so the command line stays small for one job or thousands. The program writes every file,
then runs up to ``PARALLEL`` ``sbatch --parsable`` at once; each submission's part of the output is
framed by marker lines carrying its outcome (``write`` when a file could not be written, else sbatch's
exit status). When sbatch fails for a passing reason (the controller does not answer, a submit limit)
no further sbatch is started, so an unreachable controller costs one timeout, not one per job.

:func:`classify_submission` turns the output into a :class:`SubmissionReport`, per job: submitted,
refused (permanent: fails the pipeline), deferred (certainly not submitted: try later) or unknown
(look the job up by name before trying again).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from pathlib import PurePosixPath

from sl_pipelines.core.arrays import Submission
from sl_pipelines.core.framing import MARKER, Section, split_sections
from sl_pipelines.core.seams import SubmissionReport
from sl_pipelines.errors import SubmissionError

_SBATCH_PARSABLE = re.compile(r"^(\d+(?:_\d+)?)(?:;\S+)?$")
_SBATCH_SENTENCE = re.compile(r"Submitted batch job (\d+)")

SUBMIT_LIMITS = (
    "Job violates accounting/QOS policy",
    "AssocMaxSubmitJobLimit",
    "QOSMaxSubmitJobPerUserLimit",
    "MaxSubmitJobs",
)
"""sbatch messages of a submit limit (association or QOS): jobs are held back until others finish."""

NOT_SUBMITTED = (
    "Unable to contact slurm controller",
    "Slurm temporarily unable to accept job",
    "Resource temporarily unavailable",
    *SUBMIT_LIMITS,
)
"""sbatch messages after which the job was certainly not submitted, for a passing reason: try later."""

MAYBE_SUBMITTED = ("Socket timed out", "Zero Bytes were transmitted", "Connection reset", "Broken pipe")
"""sbatch messages after which the job may or may not exist: look it up by name before trying again."""

_STOP_PATTERN = "|".join(re.escape(text) for text in (*NOT_SUBMITTED, *MAYBE_SUBMITTED))

PARALLEL = 8
"""sbatch calls running at once: slurmctld serialises the work, the clients' start-up overlaps."""

SUBMIT_PROGRAM = (
    r"""set +e
export LC_ALL=C
M='@@MARK@@'; P=@@PARALLEL@@
tmp=$(mktemp -d) || exit 3
trap 'rm -rf -- "$tmp"' EXIT
order=(); bad=""; : > "$tmp/err"
if [ -n "$1" ] && command -v python3 >/dev/null 2>&1; then
  python3 -c "$1" "$tmp" || exit 3
  mapfile -t order < "$tmp/order"
else
  slp_write() { mkdir -p -- "${1%/*}" && printf '%s' "$2" > "$1.tmp.$$" && mv -f -- "$1.tmp.$$" "$1"; }
  while IFS= read -r -d '' kind; do
    case $kind in
      F) IFS= read -r -d '' path; IFS= read -r -d '' body
         [ -n "$bad" ] && continue
         slp_write "$path" "$body" 2>>"$tmp/err" || { bad=1; rm -f -- "$path.tmp.$$" 2>/dev/null; } ;;
      L) IFS= read -r -d '' link; IFS= read -r -d '' target
         [ -n "$bad" ] && continue
         { mkdir -p -- "${link%/*}" && ln -sfn -- "$target" "$link"; } 2>>"$tmp/err" || bad=1 ;;
      S) IFS= read -r -d '' index; IFS= read -r -d '' path
         if [ -n "$bad" ]; then mv -- "$tmp/err" "$tmp/$index.write"
         else printf '%s' "$path" > "$tmp/$index.path"; fi
         order+=("$index"); bad=""; : > "$tmp/err" ;;
    esac
  done
fi
running=0
for index in "${order[@]}"; do
  [ -f "$tmp/stop" ] && break
  [ -f "$tmp/$index.path" ] || continue
  IFS= read -r -d '' script < "$tmp/$index.path"
  if [ $running -ge $P ]; then wait -n; running=$((running-1)); fi
  (
    out=$(sbatch --parsable "$script" 2>&1); rc=$?
    printf '%s\n' "$out" > "$tmp/$index.out"; echo $rc > "$tmp/$index.rc"
    if [ $rc -ne 0 ] && printf '%s' "$out" | grep -q -E '@@STOP@@'; then : > "$tmp/stop"; fi
  ) &
  running=$((running+1))
done
wait
for index in "${order[@]}"; do
  if [ -f "$tmp/$index.write" ]; then
    echo "$M begin job $index"; cat "$tmp/$index.write"; echo "$M end write"
  elif [ -f "$tmp/$index.rc" ]; then
    echo "$M begin job $index"; cat "$tmp/$index.out"; echo "$M end $(cat "$tmp/$index.rc")"
  fi
done
""".replace("@@MARK@@", MARKER)
    .replace("@@PARALLEL@@", str(PARALLEL))
    .replace("@@STOP@@", _STOP_PATTERN.replace("'", "'\\''"))
)


FEW_FILES = 32
"""Up to this many files and links, bash writes them; past it, one python3 process does."""

FILE_WRITER = """
import os, sys
tmp = sys.argv[1]
fields = sys.stdin.buffer.read().split(b"\\0")
suffix = (".tmp.%d" % os.getpid()).encode()
folders, order, problem = set(), [], None
def folder(path):
    parent = os.path.dirname(path)
    if parent not in folders:
        os.makedirs(parent, exist_ok=True)
        folders.add(parent)
def put(name, text):
    with open(os.path.join(tmp, name), "wb") as stream:
        stream.write(text)
for at in range(0, len(fields) - 2, 3):
    kind, first, second = fields[at], fields[at + 1], fields[at + 2]
    if kind == b"S":
        index = first.decode()
        put(index + (".write" if problem else ".path"), (problem + "\\n").encode() if problem else second)
        order.append(index)
        problem = None
    elif problem is None:
        part = first + suffix
        try:
            folder(first)
            if kind == b"F":
                with open(part, "wb") as stream:
                    stream.write(second)
            else:
                os.symlink(second, part)
            os.replace(part, first)
        except OSError as error:
            problem = "%s: %s" % (os.fsdecode(first), error.strerror or error)
            try:
                os.unlink(part)
            except OSError:
                pass
put("order", "".join(index + "\\n" for index in order).encode())
"""
"""Writes the scripts and log links of many submissions in one process; per submission the same
outcome files as the bash loop (``<index>.path`` or ``<index>.write``) and ``order``."""


def is_submit_limit(reason: str) -> bool:
    """True when a deferral's reason is a submit limit (then arrays go out as single jobs: an array of
    more tasks than the limit allows would never fit)."""
    return any(text in reason for text in SUBMIT_LIMITS)


def build_submit(submissions: Sequence[Submission], *, writer: bool | None = None) -> tuple[str, bytes]:
    """Returns the submission's command line and its standard input.

    Past ``FEW_FILES`` scripts and links the files are written by one ``python3`` process
    (:data:`FILE_WRITER`, where the server has one) instead of a ``mkdir`` and a ``mv`` or ``ln`` per
    file; ``writer`` forces the choice (tests run both).

    Raises:
        SubmissionError: a path or script contains a NUL character or a path is relative.
    """
    records: list[str] = []
    for index, submission in enumerate(submissions):
        for path, text in submission.files():
            records += ["F", _checked(path, text, submission), text]
        for link, target in submission.links():
            records += ["L", _checked(link, target, submission), target]
        records += ["S", str(index), str(submission.job.script_path)]
    many = writer if writer is not None else len(records) // 3 > FEW_FILES
    command = f"bash -c {shlex.quote(SUBMIT_PROGRAM)} sl-submit"
    if many:
        command += f" {shlex.quote(FILE_WRITER)}"
    return command, "".join(f"{record}\0" for record in records).encode("utf-8")


def _checked(path: PurePosixPath, text: str, submission: Submission) -> str:
    if "\0" in str(path) or "\0" in text or not str(path).startswith("/"):
        raise SubmissionError(
            f"Job script {path} cannot be sent: its path must be absolute and neither it nor the "
            "script may contain a NUL character.",
            job_name=submission.job.name,
        )
    return str(path)


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


def classify_submission(text: str, submissions: Sequence[Submission], *, completed: bool) -> SubmissionReport:
    """Sorts every job of a submission by what its submission's part of the output says.

    Args:
        text: the submission command's output.
        submissions: what was sent, in order.
        completed: False when the command did not finish (the connection dropped): a submission whose
            part is missing or cut off may then have reached Slurm.
    """
    sections = {s.name: s for s in split_sections(text)}
    submitted: dict[str, str] = {}
    refused: dict[str, str] = {}
    deferred: dict[str, str] = {}
    unknown: list[str] = []
    stop_reason = ""
    for index, submission in enumerate(submissions):
        names = [job.name for job in submission.jobs]
        section = sections.get(f"job {index}")
        if section is None or section.status is None:
            if completed and section is None:
                deferred.update(
                    dict.fromkeys(names, f"not tried: {stop_reason or 'the submission stopped early'}")
                )
            else:
                unknown += names
            continue
        output = " ".join(line.strip() for line in section.lines if line.strip())
        kind = _outcome(section, submission.job.name, output)
        if kind == "submitted":
            submitted.update(
                submission.job_ids(parse_sbatch_output("\n".join(section.lines), submission.job.name))
            )
        elif kind == "write":
            refused.update(
                dict.fromkeys(
                    names,
                    f"Could not write job script for {submission.job.name}: {output or 'no message'}",
                )
            )
        elif kind == "deferred":
            stop_reason = f"sbatch said: {output}"
            deferred.update(dict.fromkeys(names, stop_reason))
        elif kind == "unknown":
            unknown += names
            stop_reason = f"sbatch said: {output}"
        else:
            refused.update(
                dict.fromkeys(names, f"Slurm refused job {submission.job.name}: {output or 'no message'}")
            )
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
