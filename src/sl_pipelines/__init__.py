"""sl_pipelines: run multi-stage processing pipelines on a remote Slurm server from a lab PC, over SSH."""

from sl_pipelines.core.job import Environment, EnvironmentKind, Job, Resources
from sl_pipelines.core.states import JobState, JobStatus
from sl_pipelines.errors import SlPipelinesError
from sl_pipelines.vocabulary import (
    ProcessingPipelines,
    ProcessingStatus,
    TrackerFileNames,
    generate_manager_id,
)

__all__ = [
    "Environment",
    "EnvironmentKind",
    "Job",
    "JobState",
    "JobStatus",
    "ProcessingPipelines",
    "ProcessingStatus",
    "SlPipelinesError",
    "TrackerFileNames",
    "generate_manager_id",
]
