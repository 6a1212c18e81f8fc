"""The polling cycle's one remote command: a fixed bash program fed its request on stdin (pure: no I/O).

The request (job ids, job names, tracker paths with the digests of the texts the manager holds, leases)
travels on standard input as NUL-separated records after a header that counts them, so the command line
has the same small size for one pipeline or a thousand, and a request cut short is known as such. On the
server the program:

1. asks ``squeue`` for the jobs by id, narrowed to the user (with a list of ids Slurm sends every job of
   every user and filters in the client; ``-u`` makes the controller filter, so the cost does not grow
   with other users' jobs), in chunks that fit any argument limit. A job of another account is not lost
   by this: it is "missing" here and found by the accounting step below;
2. asks ``squeue`` by name, narrowed to the user, only for jobs whose id was never seen;
3. asks the accounting source only for what ``squeue`` no longer shows: ``sacct -j`` / ``sacct --name``
   where the cluster has accounting, else ``scontrol show job <id>`` (which keeps finished jobs for
   ``MinJobAge``); and ``scontrol show job`` for the few that squeue shows failed, for their exit code
   (slurmctld has it at once, where slurmdbd may lag);
4. prints each tracker file after the job states (plain text as it is, each line behind a ``|``, with
   bash alone; anything else base64-encoded); past a few trackers one ``python3``
   reads them all and answers ``same`` for a file whose bytes still have the digest the manager sent
   (a thousand unchanged trackers are neither sent nor parsed again), and checks and renews the leases;
5. for jobs that ended and whose use of resources the manager wants (once per job): ``sacct`` with the
   usage fields (steps included: MaxRSS lives there) where the cluster has accounting, else
   ``scontrol show job``; each job's own usage file is read with the trackers, after them.

Every part is framed by marker lines carrying its exit status, so a query that failed is reported as
failed and never read as "no such job".
"""

from __future__ import annotations

import base64
import hashlib
import re
import shlex
from collections.abc import Container, Mapping, Sequence
from dataclasses import replace
from pathlib import PurePosixPath

from sl_pipelines.core.framing import MARKER, Section, split_sections
from sl_pipelines.core.seams import ProbeRequest, ProbeResult
from sl_pipelines.core.slurm import AccountingMode, parse_status_sections
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

BIG_REQUEST = 16_384
"""Past this many bytes the request is copied into a temporary file on the server before it is read
(bash reads a pipe one byte per system call: 300 kB of a thousand pipelines took ~0.1 s of reads)."""

SACCT_WINDOW = "now-7days"
"""How far back ``sacct`` looks for jobs found by name."""

_ACTIVE_STATES = (
    "PENDING|RUNNING|CONFIGURING|COMPLETING|COMPLETED|SUSPENDED|REQUEUED|REQUEUE_HOLD|REQUEUE_FED|"
    "RESV_DEL_HOLD|RESIZING|SIGNALING|STAGE_OUT|STOPPED|POWER_UP_NODE|SPECIAL_EXIT"
)

PROBE_PROGRAM = (
    r"""set +e +u +o pipefail; unset IFS; shopt -u expand_aliases  # whatever a login shell's rc set
export LC_ALL=C
M='@@MARK@@'; mode=$1; CH=@@CHUNK@@; fmt='%i|%T|%r|%j'
sf=JobID,State,ExitCode,Reason,JobName
me=${USER:-$(id -un)}
# The request: a header (how many ids, names, file, lease and usage records; "big"), then the records,
# NUL-ended.
# bash reads a pipe one byte per call: a big request is copied into a file first, then read in one go.
IFS=' ' read -r -d '' nid nname nfile nlease nuse big
recs=(); t=
[ "$big" = 1 ] && t=$(mktemp 2>/dev/null) && { cat > "$t" || echo "copying the request failed" >&2; }
if [ -n "$t" ]; then exec 3< "$t"; rm -f -- "$t"; else exec 3<&0; fi  # not /dev/stdin: a file reopens at 0
raw=; [ "${BASH_VERSINFO[0]}${BASH_VERSINFO[1]}" -ge 44 ] && raw=1  # mapfile -d: bash 4.4
if [ -n "$raw" ]; then mapfile -u 3 -d '' -t recs
else while IFS= read -r -u 3 -d '' rec; do recs+=("$rec"); done; fi
exec 3<&-
if ! [[ "$nid $nname $nfile $nlease $nuse" =~ ^[0-9]+\ [0-9]+\ [0-9]+\ [0-9]+\ [0-9]+$ ]] ||
   [ ${#recs[@]} -ne $((nid + nname + nfile + nlease + nuse)) ]; then
  echo "$M begin request"; echo "it arrived cut short: ${#recs[@]} records"; echo "$M end 1"; exit 0
fi
ids=("${recs[@]:0:nid}"); names=("${recs[@]:nid:nname}")
files=("${recs[@]:nid+nname:nfile}"); leases=("${recs[@]:nid+nname+nfile:nlease}")
usage=("${recs[@]:nid+nname+nfile+nlease:nuse}"); recs=()
py=  # past a few trackers and leases, one python3 reads the trackers and checks the leases
[ $((nfile + nlease)) -gt @@FEW@@ ] && command -v python3 >/dev/null 2>&1 && py=1
if [ ${#leases[@]} -gt 0 ] && [ -z "$py" ]; then
  echo "$M begin leases"; renew=()
  for ((i=0; i<${#leases[@]}; i+=2)); do
    first=""; [ -f "${leases[i]}" ] && IFS= read -r first < "${leases[i]}"
    h=${leases[i+1]}  # "=holder": checked, not due for renewal
    if [ "$first" != "${h#=}" ]; then echo "lost $((i/2)) $first"
    elif [ "$h" = "${h#=}" ]; then renew+=("${leases[i]}"); fi
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
    printf -v chunk '%s,' "${items[@]:i:CH}"; chunk=${chunk%,}
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
# Which ids and names squeue did not show (missing, lost), and which jobs it shows ended (detail): for a
# few, a bash loop (no process); else one awk over the items and squeue's rows (bash: 0.2 s per 7,000 rows).
missing=(); lost=(); detail=()
if [ $((${#ids[@]} + ${#names[@]})) -le @@FEW@@ ]; then
  declare -A seen=(); act='^(@@ACTIVE@@)$'
  while IFS= read -r row; do
    [[ $row == [0-9]* ]] || continue
    id=${row%%|*}; r=${row#*|}; seen["i:$id"]=1; seen["i:${id%%_*}"]=1; seen["n:${r#*|*|}"]=1
    [[ ${r%%|*} =~ $act ]] || [ -n "${seen[d:$id]}" ] || { seen["d:$id"]=1; detail+=("$id"); }
  done <<< "$rows"
  for i in "${ids[@]}"; do [ -n "${seen[i:$i]}" ] || missing+=("$i"); done
  for n in "${names[@]}"; do [ -n "${seen[n:$n]}" ] || lost+=("$n"); done
else while IFS=$'\t' read -r kind item; do
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
  }'); fi
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
    if [ "$mode" = sacct ]; then
      printf -v chunk '%s,' "${usage[@]:i:CH}"; sacct -n -P -o @@USAGE@@ -j "${chunk%,}" 2>&1 || rc=$?
    else for j in "${usage[@]:i:CH}"; do scontrol -o show job "$j" 2>&1 || rc=$?; done; fi
  done
  echo "$M end $rc"
fi
if [ -n "$py" ]; then
  printf '%s\0' "${files[@]}" "${leases[@]}" | python3 -c "$2" "$M" "$nfile"
else
  for ((i=0; i<${#files[@]}; i+=2)); do
    f=${files[i]}; echo "$M begin file $((i/2))"; parts=(x x)
    # A file of printable ASCII, tabs and newlines (a tracker) is sent as it is, each line behind a "|"
    # (no process); anything else (a NUL, a control or non-ASCII byte) goes through base64.
    [ -n "$raw" ] && [ -f "$f" ] && mapfile -d '' -t parts 2>/dev/null < "$f"
    if [ ${#parts[@]} -le 1 ] && ! [[ ${parts[0]} == *[!$'\t\n'' '-'~']* ]]; then
      printf '|%s\n' "${parts[0]//$'\n'/$'\n|'}"; echo "$M end raw"
    elif [ -f "$f" ]; then base64 -w0 -- "$f" 2>&1; r=$?; echo; echo "$M end $r"
    else echo "$M end missing"; fi
  done
fi
""".replace("@@MARK@@", MARKER)
    .replace("@@CHUNK@@", str(CHUNK))
    .replace("@@ACTIVE@@", _ACTIVE_STATES)
    .replace("@@WINDOW@@", SACCT_WINDOW)
    .replace("@@FEW@@", "32")  # two records per tracker (path, digest) and lease (path, holder)
    .replace("@@USAGE@@", SACCT_USAGE_FIELDS)
)

FILE_READER = """
import base64, hashlib, os, sys
mark, out = sys.argv[1], sys.stdout
records = sys.stdin.buffer.read().split(b"\\0")[:-1]
files, leases = records[: int(sys.argv[2])], records[int(sys.argv[2]) :]
if leases:
    out.write(f"{mark} begin leases\\n")
for i in range(0, len(leases) - 1, 2):
    try:
        with open(leases[i], "rb") as stream:
            first = stream.readline().rstrip(b"\\n")
    except OSError:
        first = b""
    holder = leases[i + 1]
    if first != (holder[1:] if holder.startswith(b"=") else holder):
        out.write(f"lost {i // 2} {first.decode(errors='replace')}\\n")
        continue
    if holder.startswith(b"="):  # checked, not due for renewal
        continue
    try:
        os.utime(leases[i])
    except OSError:
        pass
if leases:
    out.write(f"{mark} end 0\\n")
for i in range(0, len(files) - 1, 2):
    out.write(f"{mark} begin file {i // 2}\\n")
    try:
        with open(files[i], "rb") as stream:
            data = stream.read()
    except OSError as exc:
        missing = isinstance(exc, FileNotFoundError)
        out.write(f"{mark} end missing\\n" if missing else f"{exc.strerror}\\n{mark} end 1\\n")
        continue
    if hashlib.blake2b(data, digest_size=16).hexdigest().encode() == files[i + 1]:
        out.write(f"{mark} end same\\n")
    else:
        out.write(base64.b64encode(data).decode() + f"\\n{mark} end 0\\n")
"""
"""With many trackers and leases, one Python reads them all (one process instead of one ``base64`` per file,
and no bash loop over the leases). A file whose bytes have the digest the manager sent (the text it already
holds) is answered ``same``, not sent."""

UNKNOWN_DIGEST = "-"
"""The digest sent for a tracker whose text the manager does not hold: never equal to a real one."""


def text_digest(data: bytes) -> str:
    """The digest the probe compares a tracker's bytes with (the server's ``FILE_READER`` computes it too)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


RENEW_EVERY = 20.0
"""Seconds between two renewals of a lease by the probe (every probe still checks each lease's holder).
A lease goes stale after ``stale_after`` >= 120 s (:func:`process_holder`): renewed at least every
20 s plus one polling interval, it never does while its manager cycles."""


class LeaseRenewals:
    """When the probe last renewed each lease, so that it touches a lease only every :data:`RENEW_EVERY` s."""

    def __init__(self) -> None:
        self._renewed: dict[PurePosixPath, float] = {}

    def due(self, request: ProbeRequest, now: float) -> set[PurePosixPath]:
        """The leases of ``request`` to renew now."""
        return {
            path for path, _ in request.leases if now - self._renewed.get(path, -RENEW_EVERY) >= RENEW_EVERY
        }

    def renewed(self, due: set[PurePosixPath], output: str, result: ProbeResult, now: float) -> None:
        """Notes the renewals a probe's output confirms (its leases part ran to the end)."""
        start = output.find(f"{MARKER} begin leases\n")
        end = output.find(f"\n{MARKER} ", start) if start >= 0 else -1
        if end < 0 or not output.startswith(f"{MARKER} end 0", end + 1):
            return
        for path in due - result.lost_leases.keys():
            self._renewed[path] = now


class KnownTrackers:
    """The tracker texts a manager holds, with their digests, so a probe need not send them again.

    The texts are kept as received (the same ``str`` objects, so that their parses are found again), only
    for the trackers of the last probe.
    """

    def __init__(self) -> None:
        self._held: dict[PurePosixPath, tuple[str, str]] = {}

    def digests(self) -> dict[PurePosixPath, str]:
        """Each held tracker's digest."""
        return {path: digest for path, (digest, _) in self._held.items()}

    def texts(self) -> dict[PurePosixPath, str]:
        """Each held tracker's text."""
        return {path: text for path, (_, text) in self._held.items()}

    def update(self, trackers: Mapping[PurePosixPath, str | None]) -> None:
        """Holds the texts of a probe's answer (a tracker that is gone, or unreadable, is dropped)."""
        held: dict[PurePosixPath, tuple[str, str]] = {}
        for path, text in trackers.items():
            if text is None:
                continue
            known = self._held.get(path)
            if known is not None and known[1] is text:
                held[path] = known
            else:  # a text decoded with replacements digests differently from the file: sent again
                held[path] = (text_digest(text.encode("utf-8")), text)
        self._held = held


def build_probe(
    request: ProbeRequest,
    mode: AccountingMode,
    digests: Mapping[PurePosixPath, str] | None = None,
    renew: Container[PurePosixPath] | None = None,
    *,
    login_bash: bool = False,
) -> tuple[str, bytes]:
    """Returns the probe's command line (the same for any request) and its standard input.

    With ``login_bash`` (the account's login shell is bash, which runs the command line) the program is
    the command line itself, one ``bash`` start fewer per cycle; otherwise ``bash -c`` runs it (the login
    shell may be sh, zsh, ...).

    ``digests`` are those (:func:`text_digest`) of the tracker texts the caller already holds: a tracker
    whose bytes still have that digest is answered ``same`` instead of its text (past a few trackers).
    Every lease is checked; only those in ``renew`` (all of them when None) are touched.

    Raises:
        ConfigurationError: an id is not a Slurm job id, or a name or path cannot be sent safely.
    """
    if login_bash:
        command = f"set -- {mode.value} {shlex.quote(FILE_READER)}\n{PROBE_PROGRAM}"
    else:
        command = f"bash -c {shlex.quote(PROBE_PROGRAM)} sl-probe {mode.value} {shlex.quote(FILE_READER)}"
    known = digests or {}
    records: list[str] = [_check_id(i) for i in request.job_ids]
    records += [_check_name(n) for n in request.job_names]
    for path in request.tracker_paths:
        records += [_check_path(path), known.get(path, UNKNOWN_DIGEST)]
    for _, path in request.usage:  # the jobs' own usage files, after the trackers: always sent
        records += [_check_path(path), UNKNOWN_DIGEST]
    for path, holder in request.leases:
        due = renew is None or path in renew
        records += [_check_path(path), _check_word(holder) if due else f"={_check_word(holder)}"]
    records += [_check_id(job_id) for job_id, _ in request.usage]
    body = "".join(f"{record}\0" for record in records).encode("utf-8")
    counts = (
        len(request.job_ids),
        len(request.job_names),
        2 * (len(request.tracker_paths) + len(request.usage)),
        2 * len(request.leases),
        len(request.usage),
    )
    big = 1 if len(body) > BIG_REQUEST else 0
    return command, f"{' '.join(map(str, counts))} {big}\0".encode() + body


_JOB_ID = re.compile(r"\d+(_\d+)?")


def _check_id(job_id: str) -> str:
    if not (job_id.isascii() and job_id.isdigit()) and not _JOB_ID.fullmatch(job_id):
        raise ConfigurationError(f"{job_id!r} is not a Slurm job id; use digits, or 123_4 for an array task.")
    return job_id


def _check_name(name: str) -> str:
    if not name or "," in name or re.search(r"[\x00-\x1f]", name) or name.startswith("@"):
        raise ConfigurationError(
            f"The job name {name!r} cannot be used in a Slurm name filter; avoid commas and line breaks."
        )
    return name


def _check_word(holder: str) -> str:
    if not holder or "\0" in holder or holder.startswith("="):
        raise ConfigurationError(
            f"The lease holder id {holder!r} must be a non-empty word without NUL characters."
        )
    return holder


def _check_path(path: PurePosixPath) -> str:
    text = str(path)
    if "\0" in text or not text.startswith("/"):
        raise ConfigurationError(f"Tracker path {text!r} must be an absolute path without NUL characters.")
    return text


def parse_probe_output(
    text: str, request: ProbeRequest, known: Mapping[PurePosixPath, str] | None = None
) -> ProbeResult:
    """Parses the probe's output into job states, tracker texts and the queries that did not answer.

    ``known`` holds the tracker texts whose digests went with the request: a tracker answered ``same``
    has that text (one the caller does not hold is unreadable, never "missing").
    """
    sections = split_sections(text)
    missing = _missing_parts(request, {s.name for s in sections})
    cut = next((s for s in sections if s.name == "request" and not s.ok), None)
    if cut is not None:  # the server did not get the whole request: nothing it printed is an answer
        missing.insert(0, "the probe's request " + (" ".join(cut.lines).strip() or "was not read"))
    statuses, problems = parse_status_sections(
        sections, job_ids=request.job_ids, job_names=request.job_names, failed=missing
    )
    files = {s.name: s for s in sections if s.name.startswith("file ")}
    trackers: dict[PurePosixPath, str | None] = {}
    unreadable: dict[PurePosixPath, str] = {}
    for index, path in enumerate(request.tracker_paths):
        section = files.get(f"file {index}")
        if section is None or section.status is None:
            unreadable[path] = "the probe's answer was cut off before it"
        elif section.status == "missing":
            trackers[path] = None
        elif section.status == "same":
            if known is not None and path in known:
                trackers[path] = known[path]
            else:
                unreadable[path] = "the server said it is unchanged, but its earlier text is not at hand"
        elif (content := file_text(section)) is not None:
            trackers[path] = content
        elif section.status == "raw":
            unreadable[path] = "its text arrived garbled (a line without its leading '|')"
        else:
            said = " ".join(line.strip() for line in section.lines if line.strip()) or "no message"
            unreadable[path] = f"reading it failed ({said})"
    return ProbeResult(
        jobs=statuses,
        trackers=trackers,
        unreadable=unreadable,
        slurm_problems=problems,
        round_trips=1,
        lost_leases=_lost_leases(request, {s.name: s for s in sections}.get("leases")),
        usage=parse_usage_sections(sections, request.usage, first_file=len(request.tracker_paths)),
    )


def file_text(section: Section) -> str | None:
    """The text of a file the probe sent: base64 (``end 0``) or, for plain text, as it is with each line
    behind a ``|`` (``end raw``); None when it was not sent whole (missing, unreadable, cut off)."""
    if section.ok:
        return base64.b64decode("".join(section.lines).strip() or b"").decode("utf-8", errors="replace")
    lines = section.lines
    if section.status != "raw" or not lines or not all(line.startswith("|") for line in lines):
        return None
    return "\n".join(line[1:] for line in lines)


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
        text = file_text(section) if section is not None else None
        if text is not None:
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
