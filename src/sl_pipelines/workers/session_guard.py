"""Refusing to move a session's working data while another pipeline writes it.

Preparation copies raw data into the session's working folder, the processing pipelines write
``processed_data`` there, and archiving moves it out and deletes it. Data archiving and processing
preparation refuse to start while any of the others runs on the session, as its tracker in the
session's tracking folder says, so they never verify or delete a tree that is still being written.
"""

from __future__ import annotations

from pathlib import Path

from sl_pipelines.adapters.locks import LockKind
from sl_pipelines.adapters.tracker_store import ProcessingTracker
from sl_pipelines.core.layout import SessionPaths
from sl_pipelines.errors import WorkerError
from sl_pipelines.vocabulary import ProcessingPipelines

#: The pipelines whose jobs write into a session's working folder (or delete from it).
WORKING_DATA_WRITERS = (
    ProcessingPipelines.PREPARATION,
    ProcessingPipelines.BEHAVIOR,
    ProcessingPipelines.SUITE2P,
    ProcessingPipelines.VIDEO,
    ProcessingPipelines.MULTIDAY,
    ProcessingPipelines.FORGING,
    ProcessingPipelines.ARCHIVING,
)


def refuse_while_writers_run(
    paths: SessionPaths, own: ProcessingPipelines, action: str, lock_kind: LockKind | str | None = None
) -> None:
    """Raises :class:`WorkerError` when a pipeline other than ``own`` that writes working data runs.

    Trackers that do not exist are idle and are not created (nor their lock files).

    Raises:
        WorkerError: another pipeline runs on the session; the message names each one and its manager.
        TrackerError: a tracker is corrupt or its lock could not be had (whether it runs is unknown).
    """
    running: list[str] = []
    for pipeline in WORKING_DATA_WRITERS:
        path = Path(paths.tracker(pipeline.tracker_file))
        if pipeline is own or not path.is_file():
            continue
        state = ProcessingTracker(path, lock_kind=lock_kind).read()
        if state.is_running:
            running.append(f"{pipeline.value} (manager {state.manager_id}, tracker {path})")
    if running:
        raise WorkerError(
            f"Cannot {action} session {paths.session!r} while another pipeline runs on it: "
            f"{'; '.join(running)}; wait for it to finish, or abort it with 'sl-tracker abort' if it is "
            "no longer running."
        )
