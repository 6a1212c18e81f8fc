"""Who drives a run: a lease file beside the run's record, taken under a lock, renewed each cycle (pure).

``<working_root>/sl_jobs/<token>/lease`` names its holder (a unique id on the first line, then user,
host, pid and the age after which the lease counts as abandoned). Its modification time is the holder's
heartbeat: every polling cycle touches it (in the cycle's one command). A second manager is refused,
naming the holder and when it was last seen, unless the heartbeat is older than the holder's stated
limit or it takes the lease over on purpose. Taking a lease holds ``lease.lock`` with ``flock``, so two
managers never both get it.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from sl_pipelines.core.framing import MARKER, split_sections
from sl_pipelines.errors import ConfigurationError

LEASE_NAME = "lease"


@dataclass(frozen=True)
class Holder:
    """A manager that drives (or wants to drive) a run."""

    holder_id: str
    user: str
    host: str
    pid: int
    stale_after: float
    details: tuple[tuple[str, str], ...] = ()  # more ``key=value`` lines (a workflow lock's run and start)

    def text(self) -> str:
        """The lease file's text."""
        more = "".join(f"{key}={value}\n" for key, value in self.details)
        return (
            f"{self.holder_id}\nuser={self.user}\nhost={self.host}\npid={self.pid}\n"
            f"stale_after={int(self.stale_after)}\n{more}"
        )

    def describe(self) -> str:
        """``pid 12 of ana on lab-pc-3``."""
        return f"pid {self.pid} of {self.user} on {self.host}"


@dataclass(frozen=True)
class LeaseRequest:
    """Take (or keep) the lease of the run whose folder is ``folder``; ``force`` takes it over."""

    folder: PurePosixPath
    holder: Holder
    force: bool = False


@dataclass(frozen=True)
class LeaseOutcome:
    """What became of a lease request.

    Attributes:
        taken: the lease is the requester's now.
        holder: who holds it otherwise (the lease file's text, parsed), or None.
        age: seconds since the holder's last heartbeat.
        took_over: the requester took it from another holder (stale, or forced).
    """

    taken: bool
    holder: Mapping[str, str] | None = None
    age: float = 0.0
    took_over: bool = False

    def describe_holder(self) -> str:
        """``pid 12 of ana on lab-pc-3, last seen 40 s ago``."""
        info = self.holder or {}
        who = f"pid {info.get('pid', '?')} of {info.get('user', '?')} on {info.get('host', '?')}"
        return f"{who}, last seen {self.age:.0f} s ago"


TAKE_PROGRAM = r"""set +e
M='@M'; i=0; now=$(date +%s)
while IFS= read -r -d '' folder; do
  IFS= read -r -d '' force; IFS= read -r -d '' text
  echo "$M begin lease $i"; i=$((i+1)); lease="$folder/@NAME"
  mkdir -p -- "$folder" 2>&1 || { echo "$M end 1"; continue; }
  (
    flock -w 10 9 || { echo "error: could not lock $lease.lock"; exit 1; }
    mine=${text%%$'\n'*}; first=""; [ -f "$lease" ] && IFS= read -r first < "$lease"
    if [ -n "$first" ] && [ "$first" != "$mine" ]; then
      age=$(( now - $(stat -c %Y -- "$lease") )); limit=$(sed -n 's/^stale_after=//p' "$lease")
      echo "age $age"; sed 's/^/held /' "$lease"
      if [ "$force" != 1 ] && [ "$age" -le "${limit:-0}" ]; then exit 0; fi
      echo "took_over"
    fi
    printf '%s' "$text" > "$lease.tmp.$$" && mv -f -- "$lease.tmp.$$" "$lease" && echo taken
  ) 9>>"$lease.lock" 2>&1
  echo "$M end $?"
done
""".replace("@M", MARKER).replace("@NAME", LEASE_NAME)


def build_take(requests: Sequence[LeaseRequest]) -> tuple[str, bytes]:
    """The command (always the same) and its standard input.

    Raises:
        ConfigurationError: a folder is relative or holds a NUL character.
    """
    records: list[str] = []
    for request in requests:
        folder = str(request.folder)
        if "\0" in folder or not folder.startswith("/"):
            raise ConfigurationError(
                f"Run folder {folder!r} must be an absolute path without NUL characters."
            )
        records += [folder, "1" if request.force else "0", request.holder.text()]
    command = f"bash -c {shlex.quote(TAKE_PROGRAM)} sl-lease"
    return command, "".join(f"{record}\0" for record in records).encode("utf-8")


def parse_take(text: str, count: int) -> tuple[LeaseOutcome, ...]:
    """One outcome per request; a request without a clean answer is not taken (the lease stays as it is)."""
    sections = {s.name: s for s in split_sections(text)}
    outcomes = []
    for index in range(count):
        section = sections.get(f"lease {index}")
        lines = section.lines if section is not None and section.ok else ()
        held = [line[5:] for line in lines if line.startswith("held ")]
        info = {k: v for k, _, v in (line.partition("=") for line in held[1:])} if held else None
        age = next((float(line[4:]) for line in lines if line.startswith("age ")), 0.0)
        outcomes.append(
            LeaseOutcome(taken="taken" in lines, holder=info, age=age, took_over="took_over" in lines)
        )
    return tuple(outcomes)
