"""sl_pipelines: run multi-stage processing pipelines on a remote Slurm server from a lab PC, over SSH.

The public names below are imported on first use (module ``__getattr__``), so that ``import
sl_pipelines`` stays cheap: ``sl-tracker`` and ``sl-worker`` run inside every job and never need the
SSH stack (paramiko), the orchestration or the local backend. ``from sl_pipelines import Server`` works
as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_HOMES = {
    "Environment": "sl_pipelines.core.job",
    "EnvironmentKind": "sl_pipelines.core.job",
    "FailureReport": "sl_pipelines.orchestration.pipeline",
    "Job": "sl_pipelines.core.job",
    "JobState": "sl_pipelines.core.states",
    "JobStatus": "sl_pipelines.core.states",
    "LocalBackend": "sl_pipelines.adapters.local",
    "PipelineManager": "sl_pipelines.orchestration.manager",
    "ProcessingPipeline": "sl_pipelines.orchestration.pipeline",
    "ProcessingPipelines": "sl_pipelines.vocabulary",
    "ProcessingStatus": "sl_pipelines.vocabulary",
    "ProcessingTracker": "sl_pipelines.adapters.tracker_store",
    "Resources": "sl_pipelines.core.job",
    "Server": "sl_pipelines.adapters.server",
    "ServerProfile": "sl_pipelines.adapters.profiles",
    "SlPipelinesError": "sl_pipelines.errors",
    "TrackerFileNames": "sl_pipelines.vocabulary",
    "generate_manager_id": "sl_pipelines.vocabulary",
    "load_profile": "sl_pipelines.adapters.profiles",
    "save_profile": "sl_pipelines.adapters.profiles",
}
"""Each public name and the module that defines it."""

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


def __getattr__(name: str) -> Any:
    """Imports a public name from its module on first use (then it is an ordinary attribute)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'sl_pipelines' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
