"""Finding a session on a backend from what a user typed: an id, ``project/animal/session``, or a path."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath

import yaml

from sl_pipelines.core.definition import ParameterValue, conform_parameter
from sl_pipelines.core.layout import RAW_DATA, SessionPaths
from sl_pipelines.core.seams import Backend
from sl_pipelines.errors import ConfigurationError, SessionNotFoundError

SESSION_DATA_FILE = "session_data.yaml"


def find_session(backend: Backend, spec: str) -> SessionPaths:
    """Resolves a session given as an id, as ``project/animal/session``, or as a path on the storage volume.

    Raises:
        SessionNotFoundError: no such session (or no raw data in it) on this backend.
        ConfigurationError: the spec is a path outside the storage root, or an id matches several sessions.
    """
    root = backend.storage_root
    text = spec.strip()
    if not text:
        raise ConfigurationError("The session name is empty; give a session id or project/animal/session.")
    if text.startswith("/"):
        path = PurePosixPath(text)
        try:
            parts = path.relative_to(root).parts
        except ValueError:
            raise ConfigurationError(
                f"Session path {text} is not under the storage root {root} of {backend.name}; "
                "give a path inside it or the session id."
            ) from None
        if len(parts) != 3:
            raise ConfigurationError(
                f"Session path {text} must be <storage_root>/<project>/<animal>/<session>."
            )
        return _checked(backend, SessionPaths(root, backend.working_root, *parts), spec)
    parts = tuple(text.split("/"))
    if len(parts) == 3 and all(parts):
        return _checked(backend, SessionPaths(root, backend.working_root, *parts), spec)
    return _checked(backend, _search(backend, text), spec)


def _search(backend: Backend, session: str) -> SessionPaths:
    root = backend.storage_root
    matches = [
        SessionPaths(root, backend.working_root, project, animal, session)
        for project in backend.list_dir(root)
        for animal in backend.list_dir(root / project)
        if session in backend.list_dir(root / project / animal)
    ]
    if not matches:
        raise SessionNotFoundError(
            f"Session {session!r} was not found under {root} on {backend.name}; "
            "check the name, or give it as project/animal/session.",
            session=session,
        )
    if len(matches) > 1:
        found = ", ".join(f"{m.project}/{m.animal}/{m.session}" for m in matches)
        raise ConfigurationError(
            f"Session {session!r} exists more than once ({found}); give project/animal/session."
        )
    return matches[0]


def _checked(backend: Backend, paths: SessionPaths, spec: str) -> SessionPaths:
    if RAW_DATA not in backend.list_dir(paths.storage_session):
        raise SessionNotFoundError(
            f"Session {spec!r} has no {RAW_DATA} folder at {paths.storage_session} on {backend.name}; "
            "check the name and that the session was uploaded.",
            session=spec,
        )
    return paths


def session_parameters(
    backend: Backend, paths: SessionPaths, defaults: Mapping[str, ParameterValue]
) -> dict[str, ParameterValue]:
    """Reads pipeline parameters (such as ``planes``) from the session's ``raw_data/session_data.yaml``.

    Only keys the pipeline declares are taken, each checked against the pipeline's default (a plane
    count must be a whole number). A missing file gives no parameters.

    Raises:
        ConfigurationError: the file is not YAML, not a mapping, or holds a value of the wrong kind; the
            message names the file and the key.
    """
    path = paths.raw_data / SESSION_DATA_FILE
    text = backend.read_text(path)
    if not text:
        return {}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise ConfigurationError(
            f"Session data file {path} is not valid YAML ({detail}); fix it, or move it aside to use the "
            "pipeline's defaults.",
            path=path,
        ) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigurationError(
            f"Session data file {path} must hold a mapping of keys to values, not {type(data).__name__}.",
            path=path,
        )
    source = f"Session data file {path}"
    return {key: conform_parameter(key, data[key], defaults[key], source) for key in defaults if key in data}
