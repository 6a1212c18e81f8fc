"""The framing of combined remote commands: marker lines around each part, with its exit status (pure).

Every remote command this package runs prints its answers between ``@@SLP@@ begin <part>`` and
``@@SLP@@ end <status>`` lines, so one output parses unambiguously, a part that failed says so, and
anything a login shell prints around them (a banner) is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

MARKER = "@@SLP@@"
"""Prefix of every framing line; Slurm never prints it and file contents travel base64-encoded or with
every line behind a ``|``."""


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
