"""Manifest generation: a table of a project's sessions and the state of each of their pipelines.

The table is written to ``<storage_root>/<project>/manifest.csv`` atomically, one row per session
folder ``<storage_root>/<project>/<animal>/<session>``, sorted by animal and session. Trackers are read
without their locks: tracker writes are atomic, so a lock-free read sees a whole document, and a manifest
of hundreds of sessions does not queue behind running jobs. A tracker that cannot be parsed shows as
``corrupt`` (one that cannot be read at all as ``unreadable``); neither stops the manifest.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath

from sl_pipelines.core.layout import RAW_DATA, TRACKING_DATA, SessionPaths
from sl_pipelines.core.tracker_state import TrackerPhase
from sl_pipelines.core.tracker_text import parse_tracker_text
from sl_pipelines.errors import TrackerCorruptError, WorkerError
from sl_pipelines.vocabulary import ProcessingPipelines
from sl_pipelines.workers.files import atomic_write_text, os_errors

_LOG = logging.getLogger("sl_pipelines")

#: The manifest's file name inside the project's storage folder.
MANIFEST_FILE = "manifest.csv"
#: The pipelines with a column, in table order. Manifest generation itself has none: its own run
#: would always show as running in the table it writes.
MANIFEST_PIPELINES = tuple(p for p in ProcessingPipelines if p is not ProcessingPipelines.MANIFEST)
#: The columns before the pipeline columns.
BASE_COLUMNS = ("animal", "session", "has_raw_data", "prepared")


class PipelineState(StrEnum):
    """The state of one pipeline of one session, as shown in the manifest."""

    IDLE = "idle"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CORRUPT = "corrupt"
    UNREADABLE = "unreadable"


_FROM_PHASE = {
    TrackerPhase.IDLE: PipelineState.IDLE,
    TrackerPhase.RUNNING: PipelineState.RUNNING,
    TrackerPhase.COMPLETE: PipelineState.SUCCEEDED,
    TrackerPhase.FAILED: PipelineState.FAILED,
}


@dataclass(frozen=True)
class ManifestRow:
    """One session of the manifest.

    Attributes:
        animal: the animal folder's name.
        session: the session folder's name.
        has_raw_data: the session has a raw-data folder on the storage volume.
        prepared: processing preparation left a working copy of the raw data on the working volume.
        states: the state of each pipeline of :data:`MANIFEST_PIPELINES`, keyed by short name.
    """

    animal: str
    session: str
    has_raw_data: bool
    prepared: bool
    states: dict[str, PipelineState]

    def as_record(self) -> dict[str, str]:
        """The row as CSV cells keyed by column name."""
        record = {
            "animal": self.animal,
            "session": self.session,
            "has_raw_data": str(self.has_raw_data).lower(),
            "prepared": str(self.prepared).lower(),
        }
        record.update({name: state.value for name, state in self.states.items()})
        return record


def manifest_columns() -> tuple[str, ...]:
    """The manifest's column names, in order."""
    return BASE_COLUMNS + tuple(p.short_name for p in MANIFEST_PIPELINES)


def read_pipeline_state(tracker: Path) -> PipelineState:
    """Returns the state shown by one tracker file; a missing file is ``idle``, never an error."""
    try:
        text = tracker.read_text(encoding="utf-8")
    except FileNotFoundError:
        return PipelineState.IDLE
    except UnicodeDecodeError:
        _LOG.warning("Tracker %s is corrupt: it is not UTF-8 text.", tracker)
        return PipelineState.CORRUPT
    except OSError as exc:
        _LOG.warning("Tracker %s cannot be read: %s", tracker, exc)
        return PipelineState.UNREADABLE
    try:
        state = parse_tracker_text(text, path=tracker)
    except TrackerCorruptError as exc:
        _LOG.warning("%s", exc)
        return PipelineState.CORRUPT
    return _FROM_PHASE[state.phase]


def session_row(paths: SessionPaths) -> ManifestRow:
    """Returns the manifest row of one session."""
    tracking = Path(paths.storage_session) / TRACKING_DATA
    states = {p.short_name: read_pipeline_state(tracking / p.tracker_file.value) for p in MANIFEST_PIPELINES}
    return ManifestRow(
        animal=paths.animal,
        session=paths.session,
        has_raw_data=Path(paths.raw_data).is_dir(),
        prepared=(Path(paths.working_session) / RAW_DATA).is_dir(),
        states=states,
    )


def _folders(parent: Path) -> list[Path]:
    """The visible sub-folders of ``parent``, sorted by name."""
    return sorted(
        (entry for entry in parent.iterdir() if entry.is_dir() and not entry.name.startswith(".")),
        key=lambda entry: entry.name,
    )


def collect_rows(storage_root: Path, working_root: Path, project: str) -> list[ManifestRow]:
    """Returns one row per session folder of the project, sorted by animal and session.

    Raises:
        WorkerError: the project folder does not exist or cannot be listed.
    """
    project_folder = storage_root / project
    if not project_folder.is_dir():
        raise WorkerError(
            f"Project {project!r} does not exist at {project_folder}; check the project name and the "
            "storage root."
        )
    rows: list[ManifestRow] = []
    with os_errors("list the sessions of", project_folder):
        for animal in _folders(project_folder):
            for session in _folders(animal):
                paths = SessionPaths(
                    PurePosixPath(storage_root),
                    PurePosixPath(working_root),
                    project,
                    animal.name,
                    session.name,
                )
                rows.append(session_row(paths))
    return rows


def render_csv(rows: list[ManifestRow]) -> str:
    """The manifest as CSV text with a header line."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=manifest_columns(), lineterminator="\n")
    writer.writeheader()
    writer.writerows(row.as_record() for row in rows)
    return buffer.getvalue()


def generate_manifest(storage_root: Path, working_root: Path, project: str) -> tuple[Path, list[ManifestRow]]:
    """Writes the project's manifest atomically; returns its path and its rows.

    Raises:
        WorkerError: the project folder does not exist, or the manifest cannot be written.
    """
    rows = collect_rows(storage_root, working_root, project)
    path = storage_root / project / MANIFEST_FILE
    with os_errors("write the manifest", path):
        atomic_write_text(path, render_csv(rows))
    _LOG.info("Wrote manifest %s with %d sessions.", path, len(rows))
    return path, rows
