"""Fixtures for component tests: a local backend with generated sessions, and private data folders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sl_pipelines.adapters.local import LocalBackend


@pytest.fixture(autouse=True)
def private_data_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Journals and profiles go to the test's own folder, never the user's."""
    monkeypatch.setenv("SL_PIPELINES_DATA_DIR", str(tmp_path / "user-data"))
    monkeypatch.setenv("SL_PIPELINES_CONFIG_DIR", str(tmp_path / "user-config"))


@pytest.fixture
def local_backend(tmp_path: Path) -> Iterator[LocalBackend]:
    """A local backend with room for eight parallel jobs; stray jobs are cancelled afterwards."""
    backend = LocalBackend(tmp_path / "local", max_jobs=8)
    yield backend
    from sl_pipelines.core.seams import ProbeRequest  # noqa: PLC0415

    records = backend.probe(ProbeRequest(job_ids=tuple(str(i) for i in range(1, 200)))).jobs
    backend.cancel([r.job_id for r in records if r.state.is_active])
