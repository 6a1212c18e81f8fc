"""The polling cycle's one remote command: a fixed bash program fed its request on stdin (pure: no I/O).

The request (job ids, job names, tracker paths) travels on standard input as NUL-separated records, so
the command line has the same small size for one pipeline or a thousand. On the server the program:

1. asks ``squeue`` for the jobs by id, narrowed to the user (with a list of ids Slurm sends every job of
   every user and filters in the client; ``-u`` makes the controller filter, so the cost does not grow
   with other users' jobs), in chunks that fit any argument limit. A job of another account is not lost
   by this: it is "missing" here and found by the accounting step below;
2. asks ``squeue`` by name, narrowed to the user, only for jobs whose id was never seen;
3. asks the accounting source only for what ``squeue`` no longer shows: ``sacct -j`` / ``sacct --name``
   where the cluster has accounting, else ``scontrol show job <id>`` (which keeps finished jobs for
   ``MinJobAge``); and ``scontrol show job`` for the few that squeue shows failed, for their exit code
   (slurmctld has it at once, where slurmdbd may lag);
4. prints each tracker file base64-encoded, after the job states;
5. for jobs that ended and whose use of resources the manager wants (once per job): ``sacct`` with the
   usage fields (steps included: MaxRSS lives there) where the cluster has accounting, else
   ``scontrol show job``; each job's own usage file is read with the trackers, after them.

Every part is framed by marker lines carrying its exit status, so a query that failed is reported as
failed and never read as "no such job".
"""

from __future__ import annotations

import base64
import re
import shlex
from collections.abc import Sequence
from dataclasses import replace
from pathlib import PurePosixPath

from sl_pipelines.core.framing import MARKER, Section, split_sections
from sl_pipelines.core.seams import ProbeRequest, ProbeResult
from sl_pipelines.core.slurm import AccountingMode, parse_status_output
from sl_pipelines.core.usage import (
    SACCT_USAGE_FIELDS,
    Measured,
    parse_job_usage,
    parse_sacct_usage,
    parse_scontrol_usage,
)
from sl_pipelines.errors import ConfigurationError

CHUNK = 400
"""Ids or names per Slurm call: a few kB of argument, far below any limit."""

SACCT_WINDOW = "now-7days"
"""How far back ``sacct`` looks for jobs found by name."""

_ACTIVE_STATES = (
    "PENDING|RUNNING|CONFIGURING|COMPLETING|COMPLETED|SUSPENDED|REQUEUED|REQUEUE_HOLD|REQUEUE_FED|"
    "RESV_DEL_HOLD|RESIZING|SIGNALING|STAGE_OUT|STOPPED|POWER_UP_NODE|SPECIAL_EXIT"
)

PROBE_PROGRAM = (
    r"""set +e
export LC_ALL=C
M='@@MARK@@'; mode=$1; CH=@@CHUNK@@; fmt='%i|%T|%r|%j'
sf=JobID,State,ExitCode,Reason,JobName
me=${USER:-$(id -un)}
ids=(); names=(); files=(); leases=(); usage=(); sec=
while IFS= read -r -d '' rec; do
  case $rec in
    @ids|@names|@files|@leases|@usage) sec=${rec#@} ;;
    *) case $sec in
         ids) ids+=("$rec") ;; names) names+=("$rec") ;; files) files+=("$rec") ;; leases) leases+=("$rec") ;;
         usage) usage+=("$rec") ;;
       esac ;;
  esac
done
if [ ${#leases[@]} -gt 0 ]; then
  echo "$M begin leases"; renew=()
  for ((i=0; i<${#leases[@]}; i+=2)); do
    first=""; [ -f "${leases[i]}" ] && IFS= read -r first < "${leases[i]}"
    if [ "$first" = "${leases[i+1]}" ]; then renew+=("${leases[i]}"); else echo "lost $((i/2)) $first"; fi
  done
  if [ ${#renew[@]} -gt 200 ]; then printf '%s\0' "${renew[@]}" | xargs -0 touch -c --
  elif [ ${#renew[@]} -gt 0 ]; then touch -c -- "${renew[@]}"; fi
  echo "$M end 0"
fi
rows=""
slp_rows() { [ -n "$1" ] && rows+="$1"$'\n'; }
slp_query() {
  local label=$1 kind=$2 rc=0 i chunk out r; shift 2
  local -a items=("$@")
  [ ${#items[@]} -gt 0 ] || return 0
  echo "$M begin $label"
  if [ "$kind" = qid ] && [ ${#items[@]} -gt $CH ]; then
    # For a list of ids slurmctld sends every job of the user and squeue filters: with more ids than
    # one call takes, one listing costs what each chunk's call would. Keep the rows asked for.
    out=$(squeue -h -r -t all -o "$fmt" -u "$me" 2>&1); rc=$?
    out=$(awk -F'|' 'NR == FNR { want[$0] = 1; next } { base = $1; sub(/_.*/, "", base) }
      $0 != "" && ($1 !~ /^[0-9]/ || ($1 in want) || (base in want))' \
      <(printf '%s\n' "${items[@]}") - <<< "$out")
    slp_rows "$out"
    [ -n "$out" ] && printf '%s\n' "$out"
    echo "$M end $rc"; return 0
  fi
  for ((i=0; i<${#items[@]}; i+=CH)); do
    chunk=$(IFS=,; echo "${items[*]:i:CH}")
    case $kind in
      qid) out=$(squeue -h -r -t all -o "$fmt" -u "$me" -j "$chunk" 2>&1); r=$?; slp_rows "$out" ;;
      qname) out=$(squeue -h -r -t all -o "$fmt" -u "$me" --name="$chunk" 2>&1); r=$?; slp_rows "$out" ;;
      aid) out=$(sacct -X -n -P -o $sf -j "$chunk" 2>&1); r=$? ;;
      aname) out=$(sacct -X -n -P -o $sf -S @@WINDOW@@ -u "$me" --name="$chunk" 2>&1); r=$? ;;
    esac
    [ -n "$out" ] && printf '%s\n' "$out"
    [ $r -ne 0 ] && rc=$r
  done
  echo "$M end $rc"
}
slp_query squeue-ids qid "${ids[@]}"
slp_query squeue-names qname "${names[@]}"
# Which ids and names squeue did not show (missing, lost), and which jobs it shows ended (detail): one
# awk over the asked-for items and squeue's rows (a bash loop took 0.2 s per 7,000 rows).
missing=(); lost=(); detail=()
while IFS=$'\t' read -r kind item; do
  case $kind in m) missing+=("$item") ;; l) lost+=("$item") ;; d) detail+=("$item") ;; esac
done < <({ [ ${#ids[@]} -gt 0 ] && printf 'I|%s\n' "${ids[@]}"
  [ ${#names[@]} -gt 0 ] && printf 'N|%s\n' "${names[@]}"; printf '%s' "$rows"; } | awk -F'|' '
  $1 == "I" { ids[++ni] = substr($0, 3); next }
  $1 == "N" { names[++nn] = substr($0, 3); next }
  $1 ~ /^[0-9]/ {
    name = $0; for (k = 0; k < 3; k++) name = substr(name, index(name, "|") + 1)
    base = $1; sub(/_.*/, "", base); seen["i:" $1] = 1; seen["i:" base] = 1; seen["n:" name] = 1
    if ($2 !~ /^(@@ACTIVE@@)$/ && !(("d:" $1) in seen)) { seen["d:" $1] = 1; print "d\t" $1 }
  }
  END {
    for (k = 1; k <= ni; k++) if (!(("i:" ids[k]) in seen)) print "m\t" ids[k]
    for (k = 1; k <= nn; k++) if (!(("n:" names[k]) in seen)) print "l\t" names[k]
  }')
if [ "$mode" = sacct ]; then
  slp_query sacct-ids aid "${missing[@]}"
  slp_query sacct-names aname "${lost[@]}"
  more=("${detail[@]}")
else
  more=("${detail[@]}" "${missing[@]}")
fi
if [ ${#more[@]} -gt 0 ]; then
  echo "$M begin scontrol"; rc=0
  for j in "${more[@]}"; do scontrol -o show job "$j" 2>&1 || rc=$?; done
  echo "$M end $rc"
fi
if [ ${#usage[@]} -gt 0 ]; then
  echo "$M begin usage-$mode"; rc=0
  for ((i=0; i<${#usage[@]}; i+=CH)); do
    if [ "$mode" = sacct ]; then sacct -n -P -o @@USAGE@@ -j "$(IFS=,; echo "${usage[*]:i:CH}")" 2>&1 || rc=$?
    else for j in "${usage[@]:i:CH}"; do scontrol -o show job "$j" 2>&1 || rc=$?; done; fi
  done
  echo "$M end $rc"
fi
if [ ${#files[@]} -gt @@FEW@@ ] && command -v python3 >/dev/null 2>&1; then
  printf '%s\0' "${files[@]}" | python3 -c "$2" "$M"
else
  i=0
  for f in "${files[@]}"; do
    echo "$M begin file $i"
    if [ -f "$f" ]; then base64 -w0 -- "$f" 2>&1; r=$?; echo; echo "$M end $r"
    else echo "$M end missing"; fi
    i=$((i+1))
  done
fi
""".replace("@@MARK@@", MARKER)
    .replace("@@CHUNK@@", str(CHUNK))
    .replace("@@ACTIVE@@", _ACTIVE_STATES)
    .replace("@@WINDOW@@", SACCT_WINDOW)
    .replace("@@FEW@@", "16")
    .replace("@@USAGE@@", SACCT_USAGE_FIELDS)
)

FILE_READER = """
import base64, sys
mark = sys.argv[1]
paths = [p for p in sys.stdin.buffer.read().split(b"\\0") if p]
out = sys.stdout
for i, path in enumerate(paths):
    out.write(f"{mark} begin file {i}\\n")
    try:
        with open(path, "rb") as stream:
            out.write(base64.b64encode(stream.read()).decode() + f"\\n{mark} end 0\\n")
    except FileNotFoundError:
        out.write(f"{mark} end missing\\n")
    except OSError as exc:
        out.write(f"{exc.strerror}\\n{mark} end 1\\n")
"""
"""With many trackers, one Python reads them all (one process instead of one ``base64`` per file)."""


def build_probe(request: ProbeRequest, mode: AccountingMode) -> tuple[str, bytes]:
    """Returns the probe's command line (the same for any request) and its standard input.

    Raises:
        ConfigurationError: an id is not a Slurm job id, or a name or path cannot be sent safely.
    """
    command = f"bash -c {shlex.quote(PROBE_PROGRAM)} sl-probe {mode.value} {shlex.quote(FILE_READER)}"
    records: list[str] = ["@ids", *(_check_id(i) for i in request.job_ids)]
    records += ["@names", *(_check_name(n) for n in request.job_names)]
    files = (*request.tracker_paths, *(path for _, path in request.usage))  # usage files after the trackers
    records += ["@files", *(_check_path(p) for p in files)]
    records += ["@leases", *(part for path, holder in request.leases for part in (_check_path(path), holder))]
    records += ["@usage", *(_check_id(job_id) for job_id, _ in request.usage)]
    return command, "".join(f"{record}\0" for record in records).encode("utf-8")


def _check_id(job_id: str) -> str:
    if not re.fullmatch(r"\d+(_\d+)?", job_id):
        raise ConfigurationError(f"{job_id!r} is not a Slurm job id; use digits, or 123_4 for an array task.")
    return job_id


def _check_name(name: str) -> str:
    if not name or "," in name or re.search(r"[\x00-\x1f]", name) or name.startswith("@"):
        raise ConfigurationError(
            f"The job name {name!r} cannot be used in a Slurm name filter; avoid commas and line breaks."
        )
    return name


def _check_path(path: PurePosixPath) -> str:
    text = str(path)
    if "\0" in text or not text.startswith("/"):
        raise ConfigurationError(f"Tracker path {text!r} must be an absolute path without NUL characters.")
    return text


def parse_probe_output(text: str, request: ProbeRequest) -> ProbeResult:
    """Parses the probe's output into job states, tracker texts and the queries that did not answer."""
    statuses, problems = parse_status_output(text, job_ids=request.job_ids, job_names=request.job_names)
    sections = split_sections(text)
    missing = _missing_parts(request, {s.name for s in sections})
    files = {s.name: s for s in sections if s.name.startswith("file ")}
    trackers: dict[PurePosixPath, str | None] = {}
    unreadable: dict[PurePosixPath, str] = {}
    for index, path in enumerate(request.tracker_paths):
        section = files.get(f"file {index}")
        if section is None or section.status is None:
            unreadable[path] = "the probe's answer was cut off before it"
        elif section.status == "missing":
            trackers[path] = None
        elif section.ok:
            data = base64.b64decode("".join(section.lines).strip() or b"")
            trackers[path] = data.decode("utf-8", errors="replace")
        else:
            said = " ".join(line.strip() for line in section.lines if line.strip()) or "no message"
            unreadable[path] = f"reading it failed ({said})"
    return ProbeResult(
        jobs=statuses,
        trackers=trackers,
        unreadable=unreadable,
        slurm_problems=(*problems, *missing),
        round_trips=1,
        lost_leases=_lost_leases(request, {s.name: s for s in sections}.get("leases")),
        usage=parse_usage_sections(sections, request.usage, first_file=len(request.tracker_paths)),
    )


def parse_usage_sections(
    sections: Sequence[Section], wanted: Sequence[tuple[str, PurePosixPath]], *, first_file: int = 0
) -> dict[str, Measured]:
    """What the asked-for jobs used: Slurm's record (sacct or scontrol) filled in from each job's own
    file (the sections ``file <first_file + i>``). A job neither source knows yet is left out."""
    if not wanted:
        return {}
    by_name = {s.name: s for s in sections}
    slurm: dict[str, Measured] = {}
    if "usage-sacct" in by_name:
        slurm = parse_sacct_usage(by_name["usage-sacct"].lines)
    elif "usage-scontrol" in by_name:
        slurm = parse_scontrol_usage(by_name["usage-scontrol"].lines)
    found: dict[str, Measured] = {}
    for index, (job_id, _) in enumerate(wanted):
        section = by_name.get(f"file {first_file + index}")
        own = None
        if section is not None and section.ok:
            text = base64.b64decode("".join(section.lines).strip() or b"").decode("utf-8", "replace")
            own = parse_job_usage(text)
        measured = slurm[job_id].filled_from(own) if job_id in slurm else own
        if measured is not None and job_id not in slurm and "usage-sacct" in by_name:
            measured = replace(measured, pending=True)  # sacct has no final record of it yet
        if measured is not None:
            found[job_id] = measured
    return found


def _lost_leases(request: ProbeRequest, section: Section | None) -> dict[PurePosixPath, str]:
    """Leases that name another holder now (taken over), mapped to that holder's id."""
    if not request.leases or section is None or not section.ok:
        return {}
    lost: dict[PurePosixPath, str] = {}
    for line in section.lines:
        if not line.startswith("lost "):
            continue
        index, _, holder = line[5:].partition(" ")
        if index.isdigit() and int(index) < len(request.leases):
            lost[request.leases[int(index)][0]] = holder
    return lost


def _missing_parts(request: ProbeRequest, present: set[str]) -> list[str]:
    """A query that must have run but left no section at all: its answer is missing."""
    wanted: Sequence[tuple[bool, str]] = (
        (bool(request.job_ids), "squeue-ids"),
        (bool(request.job_names), "squeue-names"),
    )
    return [f"{name} gave no answer" for needed, name in wanted if needed and name not in present]
