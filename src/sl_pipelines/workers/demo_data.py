"""Demo sessions: realistic raw-data trees of random bytes, with their stored checksum.

A generated session looks like one recorded by the lab's acquisition PCs::

    <storage_root>/<project>/<animal>/<session>/raw_data/
        session_data.yaml            project, animal, session, planes, ...
        ax_checksum.txt              the checksum of everything else
        telomere.bin                 marker that the upload finished
        behavior_data/{runtime,actor,sensor,encoder}.bin
        camera_data/{face,left,right}_camera.mp4
        mesoscope_data/plane_<i>.tif

The content is random but reproducible: the same seed and names give the same bytes.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import xxhash
import yaml

from sl_pipelines.core.layout import RAW_DATA
from sl_pipelines.errors import ConfigurationError, WorkerError
from sl_pipelines.workers.checksum import calculate_checksum, write_checksum
from sl_pipelines.workers.files import os_errors

_LOG = logging.getLogger("sl_pipelines")

SESSION_DATA_FILE = "session_data.yaml"
BEHAVIOR_SOURCES = ("runtime", "actor", "sensor", "encoder")
CAMERAS = ("face", "left", "right")
#: The first day of generated session names (``YYYY-MM-DD-HH-MM-SS``, one day apart).
FIRST_DAY = date(2026, 1, 5)


@dataclass(frozen=True)
class GeneratedSession:
    """A demo session written to the storage volume.

    Attributes:
        storage_session: the session's folder.
        raw_data: its raw-data folder.
        checksum: the checksum stored in ``raw_data/ax_checksum.txt``.
        files: the relative paths of the raw files, sorted (the checksum file included).
        size_bytes: their total size.
    """

    storage_session: Path
    raw_data: Path
    checksum: str
    files: tuple[str, ...]
    size_bytes: int


def _check_name(name: str, what: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise ConfigurationError(f"The {what} name {name!r} must be one plain folder name.", key=what)


def _layout(planes: int, size: int) -> dict[str, int]:
    """The raw files of a session and their sizes in bytes (videos and imaging weigh more)."""
    files = {"telomere.bin": 16}
    files.update({f"behavior_data/{name}.bin": size for name in BEHAVIOR_SOURCES})
    files.update({f"camera_data/{name}_camera.mp4": 2 * size for name in CAMERAS})
    files.update({f"mesoscope_data/plane_{i}.tif": 2 * size for i in range(planes)})
    return files


def _write_files(
    raw_data: Path, layout: dict[str, int], rng: random.Random, metadata: dict[str, object]
) -> None:
    for relative, size in layout.items():
        path = raw_data / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
    (raw_data / SESSION_DATA_FILE).write_text(yaml.safe_dump(metadata, sort_keys=False), encoding="utf-8")


def generate_session(
    storage_root: Path,
    project: str,
    animal: str,
    session: str,
    *,
    planes: int = 3,
    size_kb: int = 64,
    seed: int = 0,
) -> GeneratedSession:
    """Writes a demo session's raw data and its checksum under the storage root.

    Args:
        storage_root: the storage volume's root.
        project, animal, session: the names; any characters but ``/`` and NUL (spaces, ``;$()``...).
        planes: how many imaging planes (one ``mesoscope_data/plane_<i>.tif`` each).
        size_kb: the size of each behavior file in KiB (videos and planes get twice as much).
        seed: with the names, fixes the random content.

    Raises:
        ConfigurationError: a name, ``planes`` or ``size_kb`` is invalid.
        WorkerError: the session already has raw data, or the files cannot be written.
    """
    for name, what in ((project, "project"), (animal, "animal"), (session, "session")):
        _check_name(name, what)
    if planes < 1 or size_kb < 0:
        raise ConfigurationError(
            f"A demo session needs planes >= 1 and size_kb >= 0 (got {planes}, {size_kb})."
        )
    storage_session = storage_root / project / animal / session
    raw_data = storage_session / RAW_DATA
    if raw_data.exists():
        raise WorkerError(
            f"Session {raw_data} already exists; choose another session name or delete it first."
        )
    key = xxhash.xxh3_64(f"{seed}\0{project}\0{animal}\0{session}".encode()).intdigest()
    layout = _layout(planes, size_kb * 1024)
    metadata = {
        "project": project,
        "animal": animal,
        "session": session,
        "session_type": "mesoscope experiment",
        "acquisition_system": "demo",
        "planes": planes,
        "generated_by": "sl-worker generate",
        "seed": seed,
    }
    with os_errors("write demo session", raw_data):
        _write_files(raw_data, layout, random.Random(key), metadata)  # noqa: S311 -- demo bytes, not a secret
    checksum = calculate_checksum(raw_data)
    checksum_path = write_checksum(raw_data, checksum)
    files = (*layout, SESSION_DATA_FILE, checksum_path.name)
    size_bytes = sum((raw_data / relative).stat().st_size for relative in files)
    _LOG.info("Generated demo session %s (%d files, checksum %s).", storage_session, len(files), checksum)
    return GeneratedSession(storage_session, raw_data, checksum, tuple(sorted(files)), size_bytes)


def session_name(day: int) -> str:
    """The generated name of the ``day``-th session (0-based): a timestamp one day after the previous."""
    return f"{(FIRST_DAY + timedelta(days=day)).isoformat()}-10-00-00"


def generate_project(
    storage_root: Path,
    project: str,
    animals: Sequence[str],
    sessions_per_animal: int = 2,
    *,
    sessions: Sequence[str] = (),
    planes: int = 3,
    size_kb: int = 64,
    seed: int = 0,
) -> list[GeneratedSession]:
    """Writes demo sessions for every animal of a project.

    Args:
        storage_root: the storage volume's root.
        project: the project's name.
        animals: the animals' names.
        sessions_per_animal: how many sessions each animal gets, named by :func:`session_name`; used
            when ``sessions`` is empty.
        sessions: explicit session names, created for every animal.
        planes, size_kb, seed: as for :func:`generate_session`.

    Raises:
        ConfigurationError: no animals, or a bad name or count.
        WorkerError: a session already exists or cannot be written.
    """
    if not animals:
        raise ConfigurationError("A demo project needs at least one animal.", key="animals")
    if not sessions and sessions_per_animal < 1:
        raise ConfigurationError(f"sessions_per_animal must be at least 1, not {sessions_per_animal}.")
    names = list(sessions) or [session_name(day) for day in range(sessions_per_animal)]
    return [
        generate_session(storage_root, project, animal, name, planes=planes, size_kb=size_kb, seed=seed)
        for animal in animals
        for name in names
    ]
