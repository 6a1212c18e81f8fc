"""The public vocabulary shared by every layer: pipelines, tracker file names, statuses, manager ids."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from enum import IntEnum, StrEnum

import xxhash


class ProcessingPipelines(StrEnum):
    """The nine processing pipelines a lab runs on its sessions."""

    MANIFEST = "manifest generation"
    CHECKSUM = "checksum resolution"
    PREPARATION = "processing preparation"
    BEHAVIOR = "behavior processing"
    SUITE2P = "single-day suite2p processing"
    VIDEO = "video processing"
    MULTIDAY = "multi-day suite2p processing"
    FORGING = "dataset forging"
    ARCHIVING = "data archiving"

    @property
    def short_name(self) -> str:
        """The name used on the command line and for the pipeline's file in ``configs/``."""
        return self.name.lower()

    @property
    def tracker_file(self) -> TrackerFileNames:
        """The tracker file this pipeline reports into."""
        return TrackerFileNames[self.name]

    @classmethod
    def from_name(cls, name: str) -> ProcessingPipelines:
        """Looks a pipeline up by short name (``behavior``) or full name (``behavior processing``).

        Raises:
            ValueError: no pipeline has that name; the message lists the valid short names.
        """
        key = name.strip().lower()
        for pipeline in cls:
            if key in (pipeline.short_name, pipeline.value):
                return pipeline
        valid = ", ".join(p.short_name for p in cls)
        raise ValueError(f"Unknown pipeline {name!r}: use one of {valid}.")


class TrackerFileNames(StrEnum):
    """The tracker file of each pipeline, kept in the session's tracking folder."""

    MANIFEST = "manifest_generation_tracker.yaml"
    CHECKSUM = "checksum_resolution_tracker.yaml"
    PREPARATION = "processing_preparation_tracker.yaml"
    BEHAVIOR = "behavior_processing_tracker.yaml"
    SUITE2P = "suite2p_processing_tracker.yaml"
    VIDEO = "video_processing_tracker.yaml"
    MULTIDAY = "multiday_processing_tracker.yaml"
    FORGING = "dataset_forging_tracker.yaml"
    ARCHIVING = "data_archiving_tracker.yaml"


class ProcessingStatus(IntEnum):
    """Where a pipeline run stands, as seen by its manager."""

    RUNNING = 0
    SUCCEEDED = 1
    FAILED = 2
    ABORTED = 3

    def __str__(self) -> str:
        return self.name

    @property
    def is_final(self) -> bool:
        """True once the pipeline will not change any more."""
        return self is not ProcessingStatus.RUNNING


def generate_manager_id() -> int:
    """Returns a new unique manager id: an unsigned 64-bit integer.

    The id is the xxHash3-64 digest of the current UTC time (to the microsecond) and a random integer,
    so two managers started in the same microsecond on different PCs still get different ids.
    """
    stamp = datetime.now(tz=UTC).strftime("%Y-%m-%d-%H-%M-%S-%f")
    salt = secrets.randbelow(10**13 - 1) + 1
    return int(xxhash.xxh3_64(f"{stamp}_{salt}".encode()).intdigest())
