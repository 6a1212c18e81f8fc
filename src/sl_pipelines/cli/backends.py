"""Building the backend a command runs against: a server profile over SSH, or the local backend."""

from __future__ import annotations

from pathlib import Path

import platformdirs

from sl_pipelines.adapters.local import LocalBackend
from sl_pipelines.core.seams import Backend
from sl_pipelines.errors import ConfigurationError


def default_local_root() -> Path:
    """Where the embedded local backend keeps its storage and working volumes by default."""
    return Path(platformdirs.user_data_dir("sl_pipelines", appauthor=False)) / "local"


def open_backend(server: str | None, local_root: Path | None) -> Backend:
    """The Server for profile ``server``, or the local backend rooted at ``local_root``.

    Raises:
        ConfigurationError: ``local_root`` is not an existing folder (a typo would otherwise make an
            empty local backend there and find no sessions).
    """
    if local_root is not None and not local_root.is_dir():
        raise ConfigurationError(
            f"--local-root {local_root} is not a folder; give the folder that holds the local backend's "
            f"storage/ (make sessions there with `sl-worker generate --storage-root {local_root}/storage`).",
            key="local_root",
        )
    if server is not None and server != "local":
        from sl_pipelines.adapters.profiles import load_profile  # noqa: PLC0415 - paramiko only when needed
        from sl_pipelines.adapters.server import Server  # noqa: PLC0415

        return Server(load_profile(server))
    return LocalBackend(local_root or default_local_root())


def close_backend(backend: Backend) -> None:
    """Closes the backend's connection, if it has one."""
    close = getattr(backend, "close", None)
    if callable(close):
        close()
