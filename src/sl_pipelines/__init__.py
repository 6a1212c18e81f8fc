"""sl_pipelines: run multi-stage processing pipelines on a remote Slurm server from a lab PC, over SSH."""

from sl_pipelines.adapters.local import LocalBackend
from sl_pipelines.adapters.profiles import ServerProfile, load_profile, save_profile
from sl_pipelines.adapters.server import Server
from sl_pipelines.adapters.tracker_store import ProcessingTracker
from sl_pipelines.core.job import Environment, EnvironmentKind, Job, Resources
from sl_pipelines.core.states import JobState, JobStatus
from sl_pipelines.errors import SlPipelinesError
from sl_pipelines.orchestration.manager import PipelineManager
from sl_pipelines.orchestration.pipeline import FailureReport, ProcessingPipeline
from sl_pipelines.vocabulary import (
    ProcessingPipelines,
    ProcessingStatus,
    TrackerFileNames,
    generate_manager_id,
)

__all__ = [
    "Environment",
    "EnvironmentKind",
    "FailureReport",
    "Job",
    "JobState",
    "JobStatus",
    "LocalBackend",
    "PipelineManager",
    "ProcessingPipeline",
    "ProcessingPipelines",
    "ProcessingStatus",
    "ProcessingTracker",
    "Resources",
    "Server",
    "ServerProfile",
    "SlPipelinesError",
    "TrackerFileNames",
    "generate_manager_id",
    "load_profile",
    "save_profile",
]
