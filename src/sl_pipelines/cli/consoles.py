"""The rich consoles of the command-line interfaces: a message is never cut across lines.

Rich wraps text at the terminal's width, and at 80 columns when the output is not a terminal, so a log
file or a script reading a pipe would see a one-sentence error broken in the middle. Every console of
``sl-process``, ``sl-server`` and ``sl-tracker`` comes from :func:`make_console`: messages are printed
as they are (``soft_wrap``), and outside a terminal tables get all the width they need, one row per line.
"""

from __future__ import annotations

from rich.console import Console

UNLIMITED_WIDTH = 10_000
"""The width of a console that does not write to a terminal: wide enough for any message or table row."""


def make_console(*, stderr: bool = False, markup: bool = True, highlight: bool = True) -> Console:
    """A console on stdout (or stderr) that never hard-wraps what it prints.

    Args:
        stderr: write to standard error instead of standard output.
        markup: interpret ``[style]`` markup in strings (turn off when printing paths and reasons).
        highlight: colour numbers and strings automatically.
    """
    console = Console(stderr=stderr, soft_wrap=True, markup=markup, highlight=highlight)
    if not console.is_terminal:
        console.width = UNLIMITED_WIDTH
    return console
