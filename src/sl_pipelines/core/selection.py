"""Choosing sessions by pattern and date, with every tracker of each: ONE remote command (pure: no I/O).

A selection names sessions as ``project/animal/session`` where each part may be a shell pattern
(``proj/*/*``, ``proj/A1/*``, ``proj/*/2026-01-*``); ``--since``/``--until`` compare the session names
that are timestamps (``2026-01-05-10-00-00``). The server side expands the pattern under the storage
root, keeps the folders that hold ``raw_data``, and prints each one's trackers and session data
(base64, framed), whatever the number of sessions.
"""

from __future__ import annotations

import base64
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import PurePosixPath

from sl_pipelines.core.framing import MARKER, split_sections
from sl_pipelines.core.layout import SessionPaths
from sl_pipelines.core.session_query import SESSION_DATA_FILE, FoundSession
from sl_pipelines.core.tracker_text import parse_tracker_text
from sl_pipelines.errors import ConfigurationError, ServerError, TrackerCorruptError

_GLOB = re.compile(r"[*?\[]")
_STAMP = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:-(\d{2})-(\d{2})-(\d{2}))?")


def is_pattern(spec: str) -> bool:
    """True when a session spec is a pattern (``*``, ``?`` or ``[``) rather than one session."""
    return bool(_GLOB.search(spec))


def pattern_parts(spec: str) -> tuple[str, str, str]:
    """``project/animal/session`` patterns, each part one folder name (``..`` and empty parts refused).

    Raises:
        ConfigurationError: the pattern is not three parts, or a part could leave the storage root.
    """
    parts = tuple(spec.strip().strip("/").split("/"))
    if len(parts) != 3 or any(p in ("", ".", "..") or "\0" in p for p in parts):
        raise ConfigurationError(
            f"Session pattern {spec!r} must be project/animal/session, each part a name or a pattern "
            "such as proj/*/2026-01-*."
        )
    return parts[0], parts[1], parts[2]


def session_time(name: str) -> datetime | None:
    """The time a session name gives (``2026-01-05-10-00-00``, or a date), or None."""
    match = _STAMP.match(name)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) if g is not None else 0 for g in match.groups())
    try:  # session names carry no time zone
        return datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None


def parse_day(text: str, option: str) -> date:
    """A ``--since``/``--until`` date (``2026-01-05``).

    Raises:
        ConfigurationError: not a date.
    """
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigurationError(f"{option} {text!r} is not a date; write it as 2026-01-05.") from None


@dataclass(frozen=True)
class SessionTrackers:
    """One session found by a selection, with the text of each tracker file that exists."""

    session: FoundSession
    trackers: Mapping[str, str] = field(default_factory=dict)

    @property
    def paths(self) -> SessionPaths:
        """The session's folders."""
        return self.session.paths


SELECT_PROGRAM = r"""set +e
M='@M'; root=$1; reader=$2
mapfile -d '' -t req
p1=${req[0]}; p2=${req[1]}; p3=${req[2]}; trackers=("${req[@]:3}")
shopt -s nullglob; IFS=
sessions() { for d in "$root"/$p1/$p2/$p3; do [ -d "$d/raw_data" ] && printf '%s\0' "$d"; done; }
if [ -n "$reader" ] && command -v python3 >/dev/null 2>&1; then
  sessions | python3 -c "$reader" "$M" "$root" "@DATA" "${trackers[@]}" || exit
  printf '%s\n' "$M begin done" "$M end 0"; exit
fi
for d in "$root"/$p1/$p2/$p3; do
  [ -d "$d/raw_data" ] || continue
  echo "$M begin session"; echo "path ${d#"$root"/}"
  [ -f "$d/raw_data/@DATA" ] && echo "data $(base64 -w0 -- "$d/raw_data/@DATA")"
  for t in "${trackers[@]}"; do
    f="$d/tracking_data/$t"; [ -f "$f" ] && echo "tracker $t $(base64 -w0 -- "$f")"
  done
  echo "$M end 0"
done
printf '%s\n' "$M begin done" "$M end 0"
""".replace("@M", MARKER).replace("@DATA", SESSION_DATA_FILE)

SESSION_READER = """
import base64, os, sys
mark, root, data, *trackers = (os.fsencode(a) for a in sys.argv[1:])
out = sys.stdout.buffer
def read(path):
    try:
        with open(path, "rb") as stream:
            return base64.b64encode(stream.read())
    except OSError:
        return None
for folder in sys.stdin.buffer.read().split(b"\\0"):
    if not folder:
        continue
    lines = [mark + b" begin session", b"path " + folder[len(root) + 1:]]
    text = read(os.path.join(folder, b"raw_data", data))
    if text is not None:
        lines.append(b"data " + text)
    for name in trackers:
        text = read(os.path.join(folder, b"tracking_data", name))
        if text is not None:
            lines.append(b"tracker " + name + b" " + text)
    lines.append(mark + b" end 0")
    out.write(b"\\n".join(lines) + b"\\n")
"""
"""The selection's reading part in one python3 process (one ``base64`` per file otherwise: a project of a
thousand sessions with nine trackers each started ten thousand processes)."""


def build_select(
    root: PurePosixPath, parts: tuple[str, str, str], trackers: Sequence[str], *, reader: bool = True
) -> tuple[str, bytes]:
    """The command (the same for any pattern) and its stdin; ``reader=False`` reads with bash only (the
    way a server without ``python3`` is answered; tests run both)."""
    program = shlex.quote(SESSION_READER) if reader else "''"
    command = f"bash -c {shlex.quote(SELECT_PROGRAM)} sl-select {shlex.quote(str(root))} {program}"
    return command, "".join(f"{item}\0" for item in (*parts, *trackers)).encode("utf-8")


def parse_select(text: str, root: PurePosixPath, working: PurePosixPath) -> tuple[SessionTrackers, ...]:
    """The sessions in the program's output, sorted by project, animal and session.

    Raises:
        ServerError: the program did not get to its end (its output is cut): the sessions it names
            may not be all there are, so none is returned.
    """
    sections = split_sections(text)
    if not any(section.name == "done" and section.ok for section in sections):
        raise ServerError(
            "The session search on the server stopped before its end, so its list may be incomplete and "
            "nothing was chosen; run the command again (if it repeats, check that bash and python3 work "
            "on the server)."
        )
    found = []
    for section in sections:
        if section.name != "session" or not section.ok:
            continue
        path = next((line[5:] for line in section.lines if line.startswith("path ")), "")
        parts = path.split("/")
        if len(parts) != 3:
            continue
        data = next((_text(line[5:]) for line in section.lines if line.startswith("data ")), None)
        trackers = {
            name: _text(encoded)
            for line in section.lines
            if line.startswith("tracker ")
            for name, _, encoded in [line[8:].partition(" ")]
        }
        found.append(SessionTrackers(FoundSession(SessionPaths(root, working, *parts), data), trackers))
    return tuple(sorted(found, key=lambda s: (s.paths.project, s.paths.animal, s.paths.session)))


def _text(encoded: str) -> str:
    return base64.b64decode(encoded).decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Filters:
    """What narrows a selection: dates (on timestamp names) and the state of the pipeline's tracker."""

    since: date | None = None
    until: date | None = None
    pending: bool = False
    failed: bool = False

    @property
    def any(self) -> bool:
        """True when some filter is set."""
        return bool(self.since or self.until or self.pending or self.failed)


def choose(
    found: Sequence[SessionTrackers], tracker_file: str, filters: Filters
) -> tuple[list[SessionTrackers], list[tuple[str, str]]]:
    """The sessions the filters keep, and each one left out with why (in one short phrase)."""
    chosen: list[SessionTrackers] = []
    skipped: list[tuple[str, str]] = []
    for session in found:
        why = _skip_reason(session, tracker_file, filters)
        if why:
            skipped.append((f"{session.paths.project}/{session.paths.animal}/{session.paths.session}", why))
        else:
            chosen.append(session)
    return chosen, skipped


def _skip_reason(session: SessionTrackers, tracker_file: str, filters: Filters) -> str:
    if filters.since or filters.until:
        when = session_time(session.paths.session)
        if when is None:
            return "its name is not a date"
        if filters.since and when.date() < filters.since:
            return f"before {filters.since}"
        if filters.until and when.date() > filters.until:
            return f"after {filters.until}"
    status = _tracker_status(session.trackers.get(tracker_file), session.paths.tracker(tracker_file))
    if filters.pending and status == "complete":
        return "already complete"
    if filters.failed and status != "failed":
        return f"its last run did not fail ({status})"
    return ""


def _tracker_status(text: str | None, path: PurePosixPath) -> str:
    """The phase a tracker's text gives (idle when there is no file, ``corrupt`` when unreadable)."""
    if text is None:
        return "idle"
    try:
        return parse_tracker_text(text, path=path).phase.value
    except TrackerCorruptError:
        return "corrupt"
