"""Finding many sessions at once: ONE remote command for any number of them (pure: no I/O).

What a user typed (a session id, ``project/animal/session``, or a path under the storage root) travels on
standard input. The server side lists the storage root's sessions once when a bare id needs searching,
checks each candidate's ``raw_data`` folder, and prints its ``raw_data/session_data.yaml``
base64-encoded, each answer framed by marker lines. :func:`candidates` and :func:`choose` hold the rules
shared with the local backend, so both give the same answers and the same errors.
"""

from __future__ import annotations

import base64
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from sl_pipelines.core.framing import MARKER, split_sections
from sl_pipelines.core.layout import RAW_DATA, SessionPaths
from sl_pipelines.errors import ConfigurationError, SessionNotFoundError

SESSION_DATA_FILE = "session_data.yaml"


@dataclass(frozen=True)
class FoundSession:
    """A session that exists, with the text of its ``raw_data/session_data.yaml`` (None: no such file)."""

    paths: SessionPaths
    session_data: str | None = None


@dataclass(frozen=True)
class Candidates:
    """What one spec may name: an exact ``project/animal/session`` or a bare session id to search."""

    spec: str
    exact: tuple[str, str, str] | None = None
    search: str | None = None


def candidates(spec: str, storage_root: PurePosixPath, backend: str) -> Candidates:
    """Reads a spec without looking at the server.

    Raises:
        ConfigurationError: the spec is empty, or a path outside the storage root or of the wrong depth.
    """
    text = spec.strip()
    if not text:
        raise ConfigurationError("The session name is empty; give a session id or project/animal/session.")
    if "\0" in text or "\n" in text:
        raise ConfigurationError(
            f"Session {spec!r} contains a line break; give its id or project/animal/session."
        )
    if text.startswith("/"):
        try:
            parts = PurePosixPath(text).relative_to(storage_root).parts
        except ValueError:
            raise ConfigurationError(
                f"Session path {text} is not under the storage root {storage_root} of {backend}; "
                "give a path inside it or the session id."
            ) from None
        if len(parts) != 3:
            raise ConfigurationError(
                f"Session path {text} must be <storage_root>/<project>/<animal>/<session>."
            )
        return Candidates(spec, exact=(parts[0], parts[1], parts[2]))
    parts = tuple(text.split("/"))
    if len(parts) == 3 and all(parts):
        return Candidates(spec, exact=(parts[0], parts[1], parts[2]))
    return Candidates(spec, search=text)


def choose(
    wanted: Candidates,
    found: Sequence[tuple[str, str, str]],
    root: PurePosixPath,
    working: PurePosixPath,
    backend: str,
) -> SessionPaths:
    """Picks the session a spec names among the sessions found for it (those with a raw_data folder).

    Raises:
        SessionNotFoundError: no such session (or it has no raw data).
        ConfigurationError: a bare id matches several sessions.
    """
    if wanted.exact is not None:
        if wanted.exact not in found:
            where = root.joinpath(*wanted.exact)
            raise SessionNotFoundError(
                f"Session {wanted.spec!r} has no {RAW_DATA} folder at {where} on {backend}; "
                "check the name and that the session was uploaded.",
                session=wanted.spec,
            )
        return SessionPaths(root, working, *wanted.exact)
    if not found:
        raise SessionNotFoundError(
            f"Session {wanted.search!r} was not found under {root} on {backend}; "
            "check the name, or give it as project/animal/session.",
            session=wanted.spec,
        )
    if len(found) > 1:
        listed = ", ".join("/".join(parts) for parts in found)
        raise ConfigurationError(
            f"Session {wanted.search!r} exists more than once ({listed}); give project/animal/session."
        )
    return SessionPaths(root, working, *found[0])


FIND_PROGRAM = r"""set +e
M='@M'; root=$1; specs=(); search=""
while IFS= read -r -d '' rec; do specs+=("$rec"); [[ $rec == /* ]] || search=1; done
declare -A byid
if [ -n "$search" ] && [ -d "$root" ]; then
  while IFS= read -r -d '' dir; do
    rel=${dir#"$root"/}; [ -d "$dir/raw_data" ] && byid[${rel##*/}]+="$rel"$'\n'
  done < <(find "$root" -mindepth 3 -maxdepth 3 -type d -print0 2>/dev/null)
fi
i=0
for spec in "${specs[@]}"; do
  echo "$M begin session $i"; i=$((i+1))
  if [[ $spec == /* ]]; then rels=("${spec#/}"); else mapfile -t rels < <(printf '%s' "${byid[$spec]}"); fi
  for rel in "${rels[@]}"; do
    [ -n "$rel" ] && [ -d "$root/$rel/raw_data" ] || continue
    echo "match $rel"; data="$root/$rel/raw_data/@DATA"
    [ -f "$data" ] && echo "data $(base64 -w0 -- "$data")"
  done
  echo "$M end 0"
done
""".replace("@M", MARKER).replace("@DATA", SESSION_DATA_FILE)


def build_find(wanted: Sequence[Candidates], storage_root: PurePosixPath) -> tuple[str, bytes]:
    """The command (the same for any request) and its stdin: ``/p/a/s`` for exact specs, the id otherwise."""
    records = ["/" + "/".join(c.exact) if c.exact is not None else str(c.search) for c in wanted]
    command = f"bash -c {shlex.quote(FIND_PROGRAM)} sl-find {shlex.quote(str(storage_root))}"
    return command, "".join(f"{record}\0" for record in records).encode("utf-8")


def parse_find(text: str, count: int) -> list[list[tuple[tuple[str, str, str], str | None]]]:
    """Per spec: the sessions found, each with its session_data text (None when it has none)."""
    sections = {s.name: s for s in split_sections(text)}
    answers = []
    for index in range(count):
        section = sections.get(f"session {index}")
        if section is None or section.status is None:
            raise ConfigurationError(
                f"The session lookup's answer was cut off at session {index + 1}; try again."
            )
        found: list[tuple[tuple[str, str, str], str | None]] = []
        for line in section.lines:
            if line.startswith("match "):
                parts = tuple(line[6:].split("/"))
                if len(parts) == 3:
                    found.append(((parts[0], parts[1], parts[2]), None))
            elif line.startswith("data ") and found:
                data = base64.b64decode(line[5:]).decode("utf-8", errors="replace")
                found[-1] = (found[-1][0], data)
        answers.append(found)
    return answers


def found_sessions(
    wanted: Sequence[Candidates],
    answers: Sequence[Sequence[tuple[tuple[str, str, str], str | None]]],
    root: PurePosixPath,
    working: PurePosixPath,
    backend: str,
) -> tuple[FoundSession, ...]:
    """Each spec's session with its session data, or the first spec's error, in order.

    Raises:
        SessionNotFoundError, ConfigurationError: as :func:`choose`.
    """
    result = []
    for spec, found in zip(wanted, answers, strict=True):
        paths = choose(spec, [parts for parts, _ in found], root, working, backend)
        data = next(
            (text for parts, text in found if parts == (paths.project, paths.animal, paths.session)), None
        )
        result.append(FoundSession(paths, data))
    return tuple(result)
