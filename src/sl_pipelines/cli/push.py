"""``sl-server push``: upload a session's raw data from this computer to a server's storage volume.

::

    sl-server push LOCAL_SESSION_FOLDER --server P --project X --animal Y [--session NAME]
        [--then PIPELINE|WORKFLOW]

A progress bar (rate, time left) is drawn on stderr when it is a terminal; otherwise, and at the end,
one summary line goes to stdout. The upload itself is :mod:`sl_pipelines.adapters.upload`'s.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.filesize import decimal
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from sl_pipelines.adapters import profiles
from sl_pipelines.cli.consoles import make_console
from sl_pipelines.core.layout import RAW_DATA
from sl_pipelines.core.workflow import available_workflows
from sl_pipelines.errors import ConfigurationError
from sl_pipelines.orchestration.pipeline import default_configs_dir
from sl_pipelines.vocabulary import ProcessingPipelines

if TYPE_CHECKING:
    from sl_pipelines.adapters.upload import UploadReport

EXIT_INTERRUPTED = 130

_HELP = """Upload a session's raw data to <storage_root>/<project>/<animal>/<session>/raw_data on a server.

LOCAL_SESSION_FOLDER is the session's folder (its raw_data/ sub-folder is uploaded when it has one,
otherwise the whole folder); the session is named after it unless --session is given. Every file is
verified by xxHash on the server, and the checksum file the checksum pipeline checks (ax_checksum.txt)
is written there (a local one must match the data). An interrupted upload resumes when the same command
is run again: what already arrived verified is not sent again. A session already on the server is left
alone: identical is "already uploaded" (exit 0), different is refused (exit 1).

exit status: 0 uploaded (or already there, and --then succeeded), 1 failed, 2 bad arguments, 130
interrupted."""


def add_parser(groups: Any) -> None:
    """Adds ``push`` to the sub-commands of ``sl-server``."""
    push = groups.add_parser(
        "push",
        help="upload a session's raw data to a server (verified, resumable)",
        description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    push.add_argument("folder", type=Path, metavar="LOCAL_SESSION_FOLDER", help="the session's folder")
    push.add_argument("--server", required=True, metavar="PROFILE", help="the server profile to upload to")
    push.add_argument("--project", required=True, help="the project the session belongs to")
    push.add_argument("--animal", required=True, help="the animal the session belongs to")
    push.add_argument("--session", help="the session's name (default: the folder's name)")
    push.add_argument(
        "--then",
        metavar="PIPELINE|WORKFLOW",
        help="then run this pipeline (sl-process PIPELINE project/animal/session) or this workflow "
        "(sl-process --workflow WORKFLOW project/animal/session, e.g. lab-daily) on the session",
    )
    push.set_defaults(handler=handle_push)


def raw_data_folder(folder: Path) -> tuple[Path, str]:
    """The local folder to upload and the session's default name."""
    folder = folder.expanduser().absolute()
    if (folder / RAW_DATA).is_dir():
        return folder / RAW_DATA, folder.name
    if folder.name == RAW_DATA:
        return folder, folder.parent.name
    return folder, folder.name


def handle_push(arguments: argparse.Namespace, out: Console) -> int:
    """Uploads the session, prints one summary line, and runs ``--then``'s pipeline when asked."""
    from sl_pipelines.adapters.server import Server  # noqa: PLC0415 - paramiko only for commands that connect

    then = _then_command(arguments.then)
    source, default_name = raw_data_folder(arguments.folder)
    session = arguments.session or default_name
    spec = f"{arguments.project}/{arguments.animal}/{session}"
    err = make_console(stderr=True)
    with Server(profiles.load_profile(arguments.server)) as server, _Bar(err) as bar:
        try:
            with _stop_between_blocks(bar):
                report = server.push_session(
                    source, arguments.project, arguments.animal, session, progress=bar
                )
        except KeyboardInterrupt:
            bar.stop()
            err.print(
                Text(
                    f"Interrupted: run the same command again to resume the upload of {spec}; what already "
                    "arrived verified is not sent again.",
                    style="red",
                )
            )
            return EXIT_INTERRUPTED
    out.print(summary(report, spec, server.name), markup=False)
    if not then:
        return 0
    from sl_pipelines.cli import process  # noqa: PLC0415 - only --then needs it

    return process.main([*then, spec, "--server", arguments.server])


def _then_command(name: str | None) -> list[str]:
    """``sl-process``'s first arguments for ``--then NAME``: a pipeline, or a shipped workflow.

    Raises:
        ConfigurationError: ``NAME`` is neither (checked before anything is uploaded).
    """
    if name is None:
        return []
    try:
        ProcessingPipelines.from_name(name)
    except ValueError as exc:
        workflows = available_workflows(default_configs_dir())
        if name in workflows:
            return ["--workflow", name]
        raise ConfigurationError(
            f"--then: {exc} It is not a workflow either (workflows: {', '.join(workflows)}).", key="then"
        ) from exc
    return [name]


def summary(report: UploadReport, spec: str, server: str) -> str:
    """The one line that says what the upload did."""
    size = decimal(report.size_bytes)
    if report.already_uploaded:
        return (
            f"Session {spec} is already on {server} at {report.destination} ({report.files} files, {size}), "
            "identical by xxHash; nothing was sent."
        )
    rate = decimal(round(report.sent_bytes / max(report.seconds, 1e-6)))
    resumed = report.size_bytes - report.sent_bytes
    return (
        f"Uploaded {report.files} files ({size}) of {report.source} to {server}:{report.destination} in "
        f"{report.seconds:.1f} s ({rate}/s), verified by xxHash; checksum {report.checksum} stored in "
        f"ax_checksum.txt{f'; {decimal(resumed)} had arrived before' if resumed else ''}."
    )


@contextlib.contextmanager
def _stop_between_blocks(bar: _Bar) -> Iterator[None]:
    """Ctrl-C stops the upload at the next block it reports, where the SFTP session is in step.

    A KeyboardInterrupt in the middle of an SFTP request leaves its answers out of step, and closing the
    file would then wait for an answer that never comes. The first Ctrl-C asks :class:`_Bar` to stop;
    a second one stops the process at once (the upload resumes from what arrived verified either way).
    A SIGINT that was ignored when the command started (a background job) stays ignored.
    """
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:
        yield
        return

    def request_stop(number: int, frame: FrameType | None) -> None:
        bar.stop_requested = True
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    signal.signal(signal.SIGINT, request_stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _Bar:
    """The upload's progress on stderr: a bar with bytes, rate and time left, drawn only on a terminal.

    It is also where a requested stop (Ctrl-C) takes effect: at the next block reported.
    """

    def __init__(self, console: Console) -> None:
        self.shown = console.is_terminal
        self.stop_requested = False
        self._progress = Progress(
            TextColumn("{task.description:<9}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> _Bar:
        if self.shown:
            self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Removes the bar (it is transient); without a terminal there is nothing to remove."""
        if self.shown:
            self._progress.stop()

    def stage(self, description: str, total: int, completed: int = 0) -> None:
        """Starts a new bar for the stage (the previous one is done)."""
        if self.stop_requested:
            raise KeyboardInterrupt
        if not self.shown:
            return
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task(description, total=total, completed=completed)

    def advance(self, amount: int) -> None:
        """Moves the bar on (or stops the upload here when Ctrl-C asked for it)."""
        if self.stop_requested:
            raise KeyboardInterrupt
        if self._task is not None:
            self._progress.advance(self._task, amount)
