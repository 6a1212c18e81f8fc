"""ProcessingPipeline: one pipeline run on one session (or dataset), resolved at construction.

A pipeline is built from its YAML definition (``configs/<name>.yaml``) and a session; every stage and
job is decided then. ``runtime_cycle()`` advances it by one polling cycle through its backend: one
probe (one remote command), then at most the actions the decision calls for (submit the next stage,
record a failure, clean up). Several pipelines share cycles through :class:`PipelineManager`. The run's
state lives in :class:`~sl_pipelines.orchestration.run.PipelineRun`, which this class extends with
construction from a definition and resumption from a journal.
"""

from __future__ import annotations

import getpass
import importlib.resources
import logging
import os
import socket
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import yaml

from sl_pipelines.core.definition import (
    ParameterValue,
    PipelineDefinition,
    conform_parameter,
    load_definition,
    parse_definition,
)
from sl_pipelines.core.job import Job
from sl_pipelines.core.layout import SessionPaths
from sl_pipelines.core.resolve import ResolvedPipeline, resolve_pipeline, with_gates
from sl_pipelines.core.seams import Backend
from sl_pipelines.errors import ConfigurationError, PipelineDefinitionError, RunLockedError
from sl_pipelines.orchestration.cycle import gather_usage, run_cycle, take_leases
from sl_pipelines.orchestration.journal import RunJournal
from sl_pipelines.orchestration.run import FailureReport, PipelineRun
from sl_pipelines.orchestration.sessions import FoundSession, find_sessions, session_parameters
from sl_pipelines.vocabulary import ProcessingPipelines, ProcessingStatus, generate_manager_id

__all__ = ["FailureReport", "ProcessingPipeline", "default_configs_dir"]

logger = logging.getLogger("sl_pipelines")


def default_configs_dir() -> Path:
    """The pipeline definitions shipped with the package (override with ``--configs``).

    They are package data (``sl_pipelines/configs/``), so a wheel install finds them too; in the source
    tree the top-level ``configs/`` links to that folder.
    """
    return Path(str(importlib.resources.files("sl_pipelines") / "configs"))


class ProcessingPipeline(PipelineRun):
    """One run of one pipeline on one session (or one dataset of sessions).

    Attributes:
        pipeline: which pipeline this is.
        server: the backend the jobs run on (``Server`` or ``LocalBackend``).
        manager_id: the manager id that owns the run's tracker.
        jobs: stage number → tuple of (Job, remote working folder).
        remote_tracker_path: the tracker on the server.
        local_tracker_path: the last tracker text seen, kept in the user data folder.
        session, animal, project: the (main) session.
        keep_job_logs: keep job folders and logs after success.
        status: RUNNING until the run succeeded, failed or was aborted.
        stage: the stage currently running (0 before the first submission).
        failure: why the run failed or was aborted.
    """

    def __init__(
        self,
        resolved: ResolvedPipeline,
        server: Backend,
        journal: RunJournal,
        *,
        keep_job_logs: bool = False,
        durable: bool = True,
    ) -> None:
        for resolved_job in resolved.all_jobs():
            resolved_job.job.render()  # a value sbatch cannot take fails here, at construction
        super().__init__(resolved, server, journal, keep_job_logs=keep_job_logs, durable=durable)
        self.jobs: Mapping[int, tuple[tuple[Job, PurePosixPath], ...]] = {
            stage: tuple((r.job, r.job.working_directory) for r in jobs)
            for stage, jobs in resolved.stages.items()
        }

    # ----------------------------------------------------------------------------------------------------
    # construction
    @classmethod
    def create(
        cls,
        pipeline: ProcessingPipelines | str,
        sessions: Sequence[str | SessionPaths | FoundSession],
        server: Backend,
        *,
        manager_id: int | None = None,
        configs_dir: Path | None = None,
        parameters: Mapping[str, ParameterValue] | None = None,
        keep_job_logs: bool = False,
        dry_run: bool = False,
        detached: bool = False,
    ) -> ProcessingPipeline:
        """Builds a pipeline: loads its definition, finds the sessions, resolves every stage and job.

        The run is journaled in the user data folder (so that it can be resumed) and locked to this
        manager unless ``dry_run``. A ``detached`` run gates every job after stage 1 on the tracker, for
        :func:`~sl_pipelines.orchestration.detach.submit_detached`.

        Raises:
            PipelineDefinitionError: the definition is invalid.
            SessionNotFoundError: a session does not exist on the server.
            ConfigurationError: bad arguments (no session, several sessions for a session pipeline).
        """
        kind = (
            pipeline if isinstance(pipeline, ProcessingPipelines) else ProcessingPipelines.from_name(pipeline)
        )
        folder = configs_dir or default_configs_dir()
        source = folder / f"{kind.short_name}.yaml"
        definition = load_definition(source)
        found = _find_sessions(server, kind, definition.scope, sessions)
        paths = tuple(f.paths for f in found)
        params = session_parameters(found[0], definition.parameters)
        for key, value in (parameters or {}).items():
            default = definition.parameters.get(key)
            params[key] = conform_parameter(key, value, default, "--param")
        resolved = resolve_pipeline(
            definition,
            paths,
            manager_id=manager_id if manager_id is not None else generate_manager_id(),
            environment=server.environment,
            parameters=params,
            exports=server.job_exports,
            job_defaults=server.job_defaults,
        )
        if detached:
            resolved = with_gates(resolved)
        journal = RunJournal(
            token=resolved.token,
            pipeline=kind.short_name,
            backend=server.name,
            sessions=tuple(f"{p.project}/{p.animal}/{p.session}" for p in paths),
            manager_id=resolved.manager_id,
            parameters={k: list(v) if isinstance(v, tuple) else v for k, v in resolved.parameters.items()},
            configs_dir=str(folder),
            keep_job_logs=keep_job_logs,
            definition=source.read_text(encoding="utf-8"),
            started_by=_who(),
            tracker=str(resolved.tracker_path),
            mode="detached" if detached else "attached",
        )
        if not dry_run:
            journal = journal.save()
        return cls(resolved, server, journal, keep_job_logs=keep_job_logs, durable=not dry_run)

    @classmethod
    def resume(cls, journal: RunJournal, server: Backend, *, take_over: bool = False) -> ProcessingPipeline:
        """Rebuilds a run from its journal (or its record on the server): same manager id, run token and
        job names; and takes the run's lease, so that no other manager drives it meanwhile.

        Args:
            journal: the run's journal, from this PC or from the server's record.
            server: where the run runs.
            take_over: take the lease even from a manager whose heartbeat is still fresh (it stops
                driving the run at its next cycle).

        Raises:
            RunLockedError: another manager drives this run now (names it and when it was last seen).
            ConfigurationError: the definition changed since the run started.
        """
        definition = _definition_of(journal)
        paths = tuple(
            SessionPaths(server.storage_root, server.working_root, *spec.split("/", 2))
            for spec in journal.sessions
        )
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in journal.parameters.items()}
        resolved = resolve_pipeline(
            definition,
            paths,
            manager_id=journal.manager_id,
            environment=server.environment,
            parameters=params,
            exports=server.job_exports,
            job_defaults=server.job_defaults,
        )
        if journal.mode == "detached":
            resolved = with_gates(resolved)
        if resolved.token != journal.token:
            raise ConfigurationError(
                f"Run journal {journal.path} no longer matches its pipeline definition; "
                "delete the journal and start a new run."
            )
        pipeline = cls(resolved, server, journal, keep_job_logs=journal.keep_job_logs)
        if pipeline.is_running:
            pipeline.take_lease(force=take_over)
        return pipeline

    def take_lease(self, *, force: bool = False) -> None:
        """Takes the run's lease on the server now (a manager of this PC that has ended does not count).

        Raises:
            RunLockedError: another live manager holds it.
        """
        take_leases(self.server, [self], force=force, hand_over=False)
        if not self.lease_held:
            self.close()
            holder = self.lease_holder or "another manager"
            raise RunLockedError(
                f"Run {self.resolved.token} is already driven by {holder}; watch that manager, or take the "
                "run over with --take-over (that manager then stops driving it).",
                token=self.resolved.token,
                holder=holder,
            )

    # ----------------------------------------------------------------------------------------------------
    # cycling
    def runtime_cycle(self) -> ProcessingStatus:
        """Advances the pipeline by one polling cycle (one remote command when nothing happens).

        When the server or Slurm does not answer, the pipeline waits (its status stays RUNNING) and the
        next cycle asks again; nothing is submitted or failed on a missing answer. The cycle in which the
        run ends also asks what its last jobs used (one more remote command).
        """
        run_cycle(self.server, [self])
        if not self.is_running:
            gather_usage(self.server, [self])
        return self.status


def _definition_of(journal: RunJournal) -> PipelineDefinition:
    """The definition the run started with: its text in the record, or (older journals) its file."""
    if not journal.definition:
        return load_definition(Path(journal.configs_dir) / f"{journal.pipeline}.yaml")
    source = Path(f"{journal.pipeline}.yaml (in run record {journal.token})")
    try:
        data = yaml.safe_load(journal.definition)
    except yaml.YAMLError as exc:
        raise PipelineDefinitionError(f"{source}: not valid YAML ({exc}).", path=source) from exc
    return parse_definition(data, source=source)


def _who() -> dict[str, str]:
    """Who starts a run: user, host, pid and time (shown by status, and by a refused second manager)."""
    return {
        "user": getpass.getuser(),
        "host": socket.gethostname(),
        "pid": str(os.getpid()),
        "at": datetime.now(tz=UTC).isoformat(timespec="seconds"),
    }


def _find_sessions(
    server: Backend,
    kind: ProcessingPipelines,
    scope: str,
    sessions: Sequence[str | SessionPaths | FoundSession],
) -> tuple[FoundSession, ...]:
    if not sessions:
        raise ConfigurationError(f"The {kind.short_name} pipeline needs at least one session.")
    if scope == "session" and len(sessions) > 1:
        raise ConfigurationError(
            f"The {kind.short_name} pipeline runs on one session at a time; build one pipeline per session."
        )
    return find_sessions(server, sessions)
