"""The demo worker: a stand-in for the lab's science programs that does real file work.

Each run reads the session's raw files of its part and writes real output into
``<working_session>/processed_data/<pipeline>/<part>/``: ``summary.json`` (the inputs with their sizes
and XXH3-128 digests) written last, so its presence marks a finished part, and a derived binary. Raw
files are read from the prepared working copy when there is one, else from the storage volume.

The plane-shaped parts (given ``planes``) follow suite2p's order, and each refuses to run before the
part it depends on has finished:

* ``binarize`` splits the inputs into ``binarize/binary/plane_<i>.bin`` for every plane
  (deinterleaving, as a mesoscope interleaves its planes);
* ``plane`` (with ``plane``) turns ``plane_<i>.bin`` into ``plane_<i>/cells.bin``;
* ``combine`` concatenates every plane's results into ``combine/combined.bin``.

Any other part (and ``combine`` without ``planes``) is a generic part.
"""

from __future__ import annotations

import json
import logging
import resource
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import xxhash

from sl_pipelines.core.layout import RAW_DATA, SessionPaths
from sl_pipelines.errors import ConfigurationError, SessionNotFoundError, WorkerError
from sl_pipelines.workers.files import atomic_write_text, os_errors

_LOG = logging.getLogger("sl_pipelines")

SUMMARY_FILE = "summary.json"
#: The parts that follow suite2p's order when the number of planes is given.
PLANE_PARTS = ("binarize", "plane", "combine")
#: Longest step of a demo sleep, so that a signal is handled promptly.
SLEEP_STEP = 0.1
_CHUNK = 1024 * 1024
_BLOCK = 4096
_PAGE = 4096


@dataclass(frozen=True)
class DemoResult:
    """What a demo part wrote.

    Attributes:
        output: the part's output folder.
        files: the files it wrote, the summary last.
    """

    output: Path
    files: tuple[Path, ...]


def run_demo(
    paths: SessionPaths,
    *,
    pipeline: str,
    part: str,
    inputs: Sequence[str] = (),
    planes: int | None = None,
    plane: int | None = None,
    seconds: float = 0.0,
    fail: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
    memory_mb: float = 0.0,
    cpu_seconds: float = 0.0,
) -> DemoResult:
    """Runs one part of a demo pipeline on a session.

    Args:
        paths: the session.
        pipeline: the pipeline's short name; the first folder under ``processed_data``.
        part: the part to run (``binarize``, ``plane``, ``combine`` or any generic name).
        inputs: glob patterns relative to the raw-data folder; each must match at least one file.
        planes: the number of imaging planes; makes binarize/plane/combine plane-shaped.
        plane: the plane of a ``plane`` part (0-based).
        seconds: how long to pretend to work, in steps of at most :data:`SLEEP_STEP`.
        fail: when given, fail with this reason after the pretended work, writing nothing.
        sleep: the sleep function (tests pass a fake).
        memory_mb: grow to this much resident memory (MB) first, and hold it through the work.
        cpu_seconds: keep a CPU busy until this process has used this much CPU time in all.

    Raises:
        ConfigurationError: a name, pattern or plane number is invalid.
        SessionNotFoundError: the session has no raw data and inputs were asked for.
        WorkerError: an input pattern matches nothing, a part runs before the part it needs, ``fail``.
    """
    _check_arguments(pipeline, part, inputs, planes, plane)
    files = _match_inputs(paths, inputs) if inputs else []
    base = Path(paths.processed_data) / pipeline
    held = _hold_memory(memory_mb)
    _burn_cpu(cpu_seconds)
    _pretend_work(seconds, sleep)
    del held
    if fail is not None:
        raise WorkerError(f"Demo part {part!r} of {pipeline!r} failed as asked: {fail}")
    with os_errors("write the demo output in", base):
        if planes is not None and part in PLANE_PARTS:
            return _plane_part(paths, base, part, files, planes=planes, plane=plane)
        return _generic(paths, base / part, files)


@contextmanager
def held_memory(megabytes: int) -> Iterator[None]:
    """Holds ``megabytes`` of memory, every page written (so counted against the job), while inside."""
    block = bytearray(megabytes * 1024 * 1024)
    block[::_BLOCK] = b"\x01" * len(range(0, len(block), _BLOCK))
    try:
        yield
    finally:
        del block


def _check_arguments(
    pipeline: str, part: str, inputs: Sequence[str], planes: int | None, plane: int | None
) -> None:
    for name, what in ((pipeline, "pipeline"), (part, "part")):
        if not name or name in (".", "..") or "/" in name or "\\" in name:
            raise ConfigurationError(f"Demo {what} name {name!r} must be one plain folder name.", key=what)
    if planes is None:
        if part in ("binarize", "plane"):
            raise ConfigurationError(
                f"Demo part {part!r} needs the number of planes (--planes).", key="planes"
            )
        return
    if planes < 1:
        raise ConfigurationError(f"The number of planes must be at least 1, not {planes}.", key="planes")
    if part == "binarize" and not inputs:
        raise ConfigurationError("Demo part 'binarize' needs raw inputs (--inputs 'mesoscope_data/*').")
    if part == "plane" and (plane is None or not 0 <= plane < planes):
        raise ConfigurationError(
            f"Demo part 'plane' needs --plane between 0 and {planes - 1}, not {plane}.", key="plane"
        )


def _source(paths: SessionPaths) -> Path:
    """The prepared working copy of the raw data when there is one, else the storage volume's."""
    working = Path(paths.working_session) / RAW_DATA
    return working if working.is_dir() else Path(paths.raw_data)


def _match_inputs(paths: SessionPaths, patterns: Sequence[str]) -> list[Path]:
    source = _source(paths)
    if not source.is_dir():
        raise SessionNotFoundError(
            f"Session {paths.session!r} has no raw data at {source}; check the names and the roots.",
            session=paths.session,
        )
    found: list[Path] = []
    for pattern in patterns:
        pure = PurePosixPath(pattern)
        if not pattern or pure.is_absolute() or ".." in pure.parts:
            raise ConfigurationError(f"Input pattern {pattern!r} must be relative to {source} without '..'.")
        matches = sorted(p for p in source.glob(pattern) if p.is_file())
        if not matches:
            raise WorkerError(f"No raw file matches {pattern!r} in {source}; check the --inputs pattern.")
        found.extend(p for p in matches if p not in found)
    return found


def _hold_memory(memory_mb: float) -> bytearray:
    """Memory that makes this process's resident size reach ``memory_mb`` (every page touched)."""
    resident_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    held = bytearray(max(0, int((memory_mb - resident_mb) * 1024 * 1024)))
    for offset in range(0, len(held), _PAGE):
        held[offset] = 1
    return held


def _burn_cpu(cpu_seconds: float) -> None:
    """Computes until this process has used ``cpu_seconds`` of CPU time (since it started)."""
    digest = xxhash.xxh3_64()
    while time.process_time() < cpu_seconds:
        digest.update(b"x" * 4096)


def _pretend_work(seconds: float, sleep: Callable[[float], None]) -> None:
    remaining = seconds
    while remaining > 0:
        step = min(SLEEP_STEP, remaining)
        sleep(step)
        remaining -= step


def _describe(path: Path, root: Path) -> dict[str, Any]:
    digest = xxhash.xxh3_128()
    size = 0
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            size += len(chunk)
            digest.update(chunk)
    return {"path": path.relative_to(root).as_posix(), "size": size, "xxh3_128": digest.hexdigest()}


def _write_summary(folder: Path, paths: SessionPaths, entries: list[dict[str, Any]], **extra: Any) -> Path:
    summary = {
        "project": paths.project,
        "animal": paths.animal,
        "session": paths.session,
        "folder": folder.relative_to(Path(paths.processed_data)).as_posix(),
        "created_at": datetime.now(tz=UTC).isoformat(timespec="seconds"),
        "inputs": entries,
        **extra,
    }
    path = folder / SUMMARY_FILE
    atomic_write_text(path, json.dumps(summary, indent=2) + "\n")
    return path


def _generic(paths: SessionPaths, folder: Path, files: list[Path]) -> DemoResult:
    """Writes the summary of the inputs and ``derived.bin``: per input, its digest and its head reversed."""
    folder.mkdir(parents=True, exist_ok=True)
    source = _source(paths)
    entries = [_describe(path, source) for path in files]
    derived = folder / "derived.bin"
    with derived.open("wb") as out:
        for path, entry in zip(files, entries, strict=True):
            out.write(bytes.fromhex(entry["xxh3_128"]))
            with path.open("rb") as stream:
                out.write(stream.read(_BLOCK)[::-1])
    summary = _write_summary(folder, paths, entries, derived_size=derived.stat().st_size)
    _LOG.info("Demo part wrote %s from %d input files.", folder, len(files))
    return DemoResult(folder, (derived, summary))


def _plane_part(
    paths: SessionPaths, base: Path, part: str, files: list[Path], *, planes: int, plane: int | None
) -> DemoResult:
    if part == "binarize":
        return _binarize(paths, base, files, planes)
    if part == "plane" and plane is not None:
        return _process_plane(paths, base, plane)
    return _combine(paths, base, planes)


def _binarize(paths: SessionPaths, base: Path, files: list[Path], planes: int) -> DemoResult:
    """Deinterleaves the inputs byte by byte into one binary file per plane."""
    folder = base / "binarize"
    binary = folder / "binary"
    binary.mkdir(parents=True, exist_ok=True)
    outputs = [binary / f"plane_{i}.bin" for i in range(planes)]
    streams: list[BinaryIO] = [path.open("wb") for path in outputs]
    try:
        for path in files:
            with path.open("rb") as stream:
                while chunk := stream.read(_CHUNK - _CHUNK % planes):
                    for i, out in enumerate(streams):
                        out.write(chunk[i::planes])
    finally:
        for out in streams:
            out.close()
    entries = [_describe(path, _source(paths)) for path in files]
    summary = _write_summary(folder, paths, entries, planes=planes)
    _LOG.info("Binarized %d files into %d planes in %s.", len(files), planes, binary)
    return DemoResult(folder, (*outputs, summary))


def _process_plane(paths: SessionPaths, base: Path, plane: int) -> DemoResult:
    """Turns one plane's binary into ``cells.bin``: the XXH3-64 digest of each 4 KiB block."""
    binarized = base / "binarize"
    binary = binarized / "binary" / f"plane_{plane}.bin"
    if not (binarized / SUMMARY_FILE).is_file() or not binary.is_file():
        raise WorkerError(
            f"Plane {plane} has no finished binarization at {binary}; binarization must succeed "
            "before the planes are processed."
        )
    folder = base / f"plane_{plane}"
    folder.mkdir(parents=True, exist_ok=True)
    cells = folder / "cells.bin"
    with binary.open("rb") as stream, cells.open("wb") as out:
        while block := stream.read(_BLOCK):
            out.write(xxhash.xxh3_64(block).digest())
    summary = _write_summary(folder, paths, [_describe(binary, base)], plane=plane)
    return DemoResult(folder, (cells, summary))


def _combine(paths: SessionPaths, base: Path, planes: int) -> DemoResult:
    """Concatenates every plane's ``cells.bin`` into ``combine/combined.bin``."""
    results = [base / f"plane_{i}" for i in range(planes)]
    missing = [str(i) for i, folder in enumerate(results) if not (folder / SUMMARY_FILE).is_file()]
    if missing:
        raise WorkerError(
            f"Planes {', '.join(missing)} of {planes} have no results under {base}; every plane must "
            "succeed before they are combined."
        )
    folder = base / "combine"
    folder.mkdir(parents=True, exist_ok=True)
    combined = folder / "combined.bin"
    with combined.open("wb") as out:
        for result in results:
            out.write((result / "cells.bin").read_bytes())
    entries = [_describe(result / "cells.bin", base) for result in results]
    summary = _write_summary(folder, paths, entries, planes=planes)
    return DemoResult(folder, (combined, summary))
