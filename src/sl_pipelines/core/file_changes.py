"""Writing and removing files on the server in ONE command: run records, job folders (pure: no I/O).

Standard input carries NUL-separated records: ``W path text`` writes a file atomically (temporary name
in the same folder, then a rename), ``R path keep`` removes a path (a whole tree), or, when ``keep``
lists names (one per line), everything inside the folder but those. Each change's part of the output is
framed with its exit status, so one change that fails never hides another.
"""

from __future__ import annotations

import base64
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from sl_pipelines.core.framing import MARKER, split_sections
from sl_pipelines.errors import ConfigurationError


@dataclass(frozen=True)
class FileChange:
    """One change to a file or folder where the pipelines run.

    Attributes:
        path: the file or folder.
        text: write this text to the file atomically; None removes the path instead.
        keep: when removing a folder, names inside it that stay.
    """

    path: PurePosixPath
    text: str | None = None
    keep: tuple[str, ...] = ()


CHANGE_PROGRAM = r"""set +e
M='@M'; i=0
slp_write() { mkdir -p -- "${1%/*}" && printf '%s' "$2" > "$1.tmp.$$" && mv -f -- "$1.tmp.$$" "$1"; }
slp_clear() {
  [ -e "$1" ] || [ -L "$1" ] || return 0
  if [ -z "$2" ]; then rm -rf -- "$1"; return; fi
  local entry name rc=0
  for entry in "$1"/* "$1"/.[!.]* "$1"/..?*; do
    [ -e "$entry" ] || [ -L "$entry" ] || continue
    name=${entry##*/}
    printf '%s\n' "$2" | grep -qxF -- "$name" && continue
    rm -rf -- "$entry" || rc=1
  done
  return $rc
}
while IFS= read -r -d '' kind; do
  IFS= read -r -d '' path; IFS= read -r -d '' arg
  echo "$M begin change $i"; i=$((i+1))
  case $kind in
    W) slp_write "$path" "$arg" 2>&1 || rm -f -- "$path.tmp.$$" 2>/dev/null ;;
    R) slp_clear "$path" "$arg" 2>&1 ;;
  esac
  echo "$M end $?"
done
""".replace("@M", MARKER)


def build_changes(changes: Sequence[FileChange]) -> tuple[str, bytes]:
    """The command (always the same) and its standard input.

    Raises:
        ConfigurationError: a path is relative or a text or path holds a NUL character.
    """
    records: list[str] = []
    for change in changes:
        text = change.text if change.text is not None else "\n".join(change.keep)
        if "\0" in str(change.path) + text or not str(change.path).startswith("/"):
            raise ConfigurationError(
                f"{change.path} cannot be changed on the server: absolute paths, no NUL."
            )
        records += ["W" if change.text is not None else "R", str(change.path), text]
    command = f"bash -c {shlex.quote(CHANGE_PROGRAM)} sl-files"
    return command, "".join(f"{record}\0" for record in records).encode("utf-8")


def parse_changes(text: str, changes: Sequence[FileChange]) -> tuple[str, ...]:
    """Per change: "" when it was made, else why not (one sentence naming the path)."""
    sections = {s.name: s for s in split_sections(text)}
    results = []
    for index, change in enumerate(changes):
        section = sections.get(f"change {index}")
        if section is not None and section.ok:
            results.append("")
            continue
        said = " ".join(" ".join(section.lines).split()) if section is not None else "no answer"
        verb = "write" if change.text is not None else "remove"
        results.append(f"Could not {verb} {change.path} on the server: {said or 'no message'}")
    return tuple(results)


READ_PROGRAM = r"""set +e
M='@M'; i=0
for f in "$1"/*/"$2"; do
  [ -f "$f" ] || continue
  echo "$M begin read $i"; i=$((i+1)); echo "path $f"; echo "data $(base64 -w0 -- "$f")"; echo "$M end $?"
done
""".replace("@M", MARKER)


def build_read(folder: PurePosixPath, name: str) -> str:
    """A command printing every ``<folder>/*/<name>`` (base64, framed)."""
    return f"bash -c {shlex.quote(READ_PROGRAM)} sl-read {shlex.quote(str(folder))} {shlex.quote(name)}"


def parse_read(text: str) -> dict[PurePosixPath, str]:
    """Each file's path and text from the output of :func:`build_read` (unreadable ones are left out)."""
    files: dict[PurePosixPath, str] = {}
    for section in split_sections(text):
        if not section.ok:
            continue
        path = next((line[5:] for line in section.lines if line.startswith("path ")), "")
        data = next((line[5:] for line in section.lines if line.startswith("data ")), "")
        if path:
            files[PurePosixPath(path)] = base64.b64decode(data).decode("utf-8", errors="replace")
    return files
