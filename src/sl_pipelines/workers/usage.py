"""What a job used, measured by the job itself: written beside its tracker report as it ends.

Clusters without accounting keep no record of a job's CPU time or peak memory, and where there is one,
``MaxRSS`` is sampled (every ``JobAcctGatherFrequency`` seconds) and misses the peaks of short jobs. So
``sl-worker`` writes ``usage-<job id>.json`` into the folder the job script names (``SL_USAGE_DIR``: the
run's ``.usage`` folder): the
CPU time and peak resident memory of itself and its children (``getrusage``), its start and end, its node,
and the CPUs and memory Slurm gave it. The manager reads it once, after the job ended.
"""

from __future__ import annotations

import logging
import os
import resource
import socket
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from sl_pipelines.core.usage import USAGE_DIR_VARIABLE, USAGE_FILE_PREFIX, job_usage_text, slurm_job_id
from sl_pipelines.workers.files import atomic_write_text

_LOG = logging.getLogger("sl_pipelines")


class UsageMeter:
    """Measures from its creation until :meth:`write` (the worker's start and end)."""

    def __init__(self, environment: Mapping[str, str] | None = None) -> None:
        self.environment = os.environ if environment is None else environment
        self.started_at = datetime.now().astimezone()
        self._started = time.monotonic()

    def path(self) -> Path | None:
        """Where the usage file goes, or None outside a job (no folder or no job id given)."""
        folder, job_id = self.environment.get(USAGE_DIR_VARIABLE), slurm_job_id(self.environment)
        if not folder or not job_id:
            return None
        return Path(folder) / f"{USAGE_FILE_PREFIX}{job_id}.json"

    def write(self) -> None:
        """Writes the usage file (atomically); a failure is logged, never raised: the job's work counts."""
        path = self.path()
        if path is None:
            return
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        text = job_usage_text(
            cpu_s=own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime,
            max_rss_kib=max(own.ru_maxrss, children.ru_maxrss),  # KiB on Linux
            started_at=self.started_at.isoformat(timespec="seconds"),
            ended_at=datetime.now().astimezone().isoformat(timespec="seconds"),
            elapsed_s=time.monotonic() - self._started,
            node=socket.gethostname(),
            environment=self.environment,
        )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, text)
        except OSError as exc:
            _LOG.warning("Could not write what this job used into %s: %s", path, exc)
