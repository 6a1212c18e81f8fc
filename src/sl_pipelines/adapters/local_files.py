"""The local backend's file operations: run records and job folders, and finding sessions on disk."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from sl_pipelines.core.file_changes import FileChange
from sl_pipelines.core.layout import RAW_DATA, SessionPaths
from sl_pipelines.core.selection import SessionTrackers, pattern_parts
from sl_pipelines.core.session_query import SESSION_DATA_FILE, FoundSession, candidates, found_sessions
from sl_pipelines.vocabulary import TrackerFileNames


def find_local_sessions(
    root: PurePosixPath, working: PurePosixPath, specs: Sequence[str], backend: str
) -> tuple[FoundSession, ...]:
    """Every session named, with its session data, by the same rules as the Server's one command."""
    wanted = [candidates(spec, root, backend) for spec in specs]
    answers = []
    for spec in wanted:
        names = [spec.exact] if spec.exact is not None else _sessions_named(Path(root), str(spec.search))
        found = [p for p in names if (Path(root).joinpath(*p) / RAW_DATA).is_dir()]
        answers.append([(p, _read(Path(root).joinpath(*p) / RAW_DATA / SESSION_DATA_FILE)) for p in found])
    return found_sessions(wanted, answers, root, working, backend)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def _sessions_named(root: Path, name: str) -> list[tuple[str, str, str]]:
    """``(project, animal, name)`` of every folder ``<root>/*/*/<name>``."""
    if not root.is_dir():
        return []
    return [
        (project.name, animal.name, name)
        for project in sorted(root.iterdir())
        if project.is_dir()
        for animal in sorted(project.iterdir())
        if animal.is_dir() and (animal / name).is_dir()
    ]


def change_local_file(change: FileChange) -> str:
    """Makes one change (write atomically, or remove keeping some names); returns "" or why it failed."""
    path = Path(change.path)
    try:
        if change.text is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            temp.write_text(change.text, encoding="utf-8")
            temp.replace(path)
        elif not change.keep:
            _remove(path)
        elif path.is_dir():
            for entry in path.iterdir():
                if entry.name not in change.keep:
                    _remove(entry)
    except OSError as exc:
        verb = "write" if change.text is not None else "remove"
        return f"Could not {verb} {exc.filename or path}: {exc.strerror or exc}"
    return ""


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def select_local_sessions(
    root: PurePosixPath, working: PurePosixPath, pattern: str
) -> tuple[SessionTrackers, ...]:
    """The sessions a pattern names on the local disk, with their trackers and session data."""
    parts = pattern_parts(pattern)
    found = []
    for folder in sorted(Path(root).glob("/".join(parts))):
        if not (folder / RAW_DATA).is_dir():
            continue
        paths = SessionPaths(root, working, *folder.relative_to(Path(root)).parts)
        trackers = {
            t.value: text for t in TrackerFileNames if (text := _read(folder / "tracking_data" / t.value))
        }
        found.append(
            SessionTrackers(FoundSession(paths, _read(folder / RAW_DATA / SESSION_DATA_FILE)), trackers)
        )
    return tuple(found)
