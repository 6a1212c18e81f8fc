"""Finding sessions on a backend from what a user typed (ids, ``project/animal/session``, paths), all in
one call, and reading pipeline parameters from their ``raw_data/session_data.yaml``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import yaml

from sl_pipelines.core.definition import ParameterValue, conform_parameter
from sl_pipelines.core.layout import SessionPaths
from sl_pipelines.core.seams import Backend
from sl_pipelines.core.session_query import SESSION_DATA_FILE, FoundSession
from sl_pipelines.errors import ConfigurationError

__all__ = ["SESSION_DATA_FILE", "FoundSession", "find_session", "find_sessions", "session_parameters"]


def find_sessions(
    backend: Backend, specs: Sequence[str | SessionPaths | FoundSession]
) -> tuple[FoundSession, ...]:
    """Every session named, with its session data: ONE backend call for all the names typed.

    Raises:
        SessionNotFoundError: no such session (or no raw data in it) on this backend.
        ConfigurationError: a path outside the storage root, or an id that matches several sessions.
    """
    typed = [spec for spec in specs if isinstance(spec, str)]
    found = iter(backend.find_sessions(typed) if typed else ())
    result = []
    for spec in specs:
        if isinstance(spec, str):
            result.append(next(found))
        elif isinstance(spec, SessionPaths):
            result.append(FoundSession(spec, backend.read_text(spec.raw_data / SESSION_DATA_FILE)))
        else:
            result.append(spec)
    return tuple(result)


def find_session(backend: Backend, spec: str) -> SessionPaths:
    """One session's folders (see :func:`find_sessions`)."""
    return find_sessions(backend, [spec])[0].paths


def session_parameters(
    session: FoundSession, defaults: Mapping[str, ParameterValue]
) -> dict[str, ParameterValue]:
    """Pipeline parameters (such as ``planes``) from the session's ``raw_data/session_data.yaml``.

    Only keys the pipeline declares are taken, each checked against the pipeline's default (a plane
    count must be a whole number). No file gives no parameters.

    Raises:
        ConfigurationError: the file is not YAML, not a mapping, or holds a value of the wrong kind; the
            message names the file and the key.
    """
    path = session.paths.raw_data / SESSION_DATA_FILE
    text = session.session_data
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
