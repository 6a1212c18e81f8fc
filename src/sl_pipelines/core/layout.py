"""Where a session's data, trackers and processing output live on the server (pure path arithmetic).

::

    <storage_root>/<project>/<animal>/<session>/raw_data/...         raw, never modified by processing
    <storage_root>/<project>/<animal>/<session>/tracking_data/*.yaml trackers (+ .lock files)
    <working_root>/<project>/<animal>/<session>/processed_data/...    processing output
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

RAW_DATA = "raw_data"
TRACKING_DATA = "tracking_data"
PROCESSED_DATA = "processed_data"
JOB_FOLDERS = "sl_jobs"


@dataclass(frozen=True)
class SessionPaths:
    """The folders of one session on a server with a storage and a working volume."""

    storage_root: PurePosixPath
    working_root: PurePosixPath
    project: str
    animal: str
    session: str

    @property
    def storage_session(self) -> PurePosixPath:
        """The session's folder on the storage volume."""
        return self.storage_root / self.project / self.animal / self.session

    @property
    def working_session(self) -> PurePosixPath:
        """The session's folder on the working volume."""
        return self.working_root / self.project / self.animal / self.session

    @property
    def raw_data(self) -> PurePosixPath:
        """Raw data as recorded; processing never writes here."""
        return self.storage_session / RAW_DATA

    @property
    def tracking_data(self) -> PurePosixPath:
        """The folder of the session's trackers and their lock files."""
        return self.storage_session / TRACKING_DATA

    @property
    def processed_data(self) -> PurePosixPath:
        """Processing output on the working volume."""
        return self.working_session / PROCESSED_DATA

    @property
    def archived_processed_data(self) -> PurePosixPath:
        """Where data archiving moves processed data to, on the storage volume."""
        return self.storage_session / PROCESSED_DATA

    @property
    def project_storage(self) -> PurePosixPath:
        """The project's folder on the storage volume."""
        return self.storage_root / self.project

    def tracker(self, file_name: str) -> PurePosixPath:
        """The path of one tracker file of this session."""
        return self.tracking_data / file_name
