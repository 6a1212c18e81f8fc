"""ProcessingPipeline: one pipeline run on one session (or dataset), resolved at construction.

A pipeline is built from its YAML definition (``configs/<name>.yaml``) and a session; every stage and
job is decided then. ``runtime_cycle()`` advances it by one polling cycle through its backend: one
probe (one remote command), then at most the actions the decision calls for (submit the next stage,
record a failure, clean up). Several pipelines share cycles through :class:`PipelineManager`.
"""

from __future__ import annotations

import importlib.resources
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sl_pipelines.core.decisions import Decision, RunView, decide
from sl_pipelines.core.definition import ParameterValue, load_definition
from sl_pipelines.core.job import Job
from sl_pipelines.core.layout import SessionPaths
from sl_pipelines.core.resolve import ResolvedJob, ResolvedPipeline, resolve_pipeline
from sl_pipelines.core.seams import Backend, ProbeRequest, ProbeResult
from sl_pipelines.core.states import JobState, JobStatus
from sl_pipelines.core.tracker_state import TrackerState
from sl_pipelines.core.tracker_text import parse_tracker_text
from sl_pipelines.errors import ConfigurationError, TrackerCorruptError
from sl_pipelines.orchestration.journal import RunJournal, data_dir
from sl_pipelines.orchestration.sessions import find_session, session_parameters
from sl_pipelines.vocabulary import ProcessingPipelines, ProcessingStatus, generate_manager_id

logger = logging.getLogger("sl_pipelines")

LOST_JOB_GRACE_SECONDS = 30.0
STDERR_TAIL_BYTES = 4096


def default_configs_dir() -> Path:
    """The pipeline definitions shipped with the package (override with ``--configs``).

    They are package data (``sl_pipelines/configs/``), so a wheel install finds them too; in the source
    tree the top-level ``configs/`` links to that folder.
    """
    return Path(str(importlib.resources.files("sl_pipelines") / "configs"))


@dataclass(frozen=True)
class FailureReport:
    """Why a pipeline failed: the reason, the job it is pinned on, and the tail of that job's stderr."""

    reason: str
    job: str | None = None
    stderr_path: PurePosixPath | None = None
    stderr_tail: str = ""


class ProcessingPipeline:
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
        self, resolved: ResolvedPipeline, server: Backend, journal: RunJournal, *, keep_job_logs: bool = False
    ) -> None:
        self.resolved = resolved
        self.server = server
        self.journal = journal
        self.pipeline: ProcessingPipelines = resolved.definition.pipeline
        self.manager_id = resolved.manager_id
        self.jobs: Mapping[int, tuple[tuple[Job, PurePosixPath], ...]] = {
            stage: tuple((r.job, r.job.working_directory) for r in jobs)
            for stage, jobs in resolved.stages.items()
        }
        self.remote_tracker_path = resolved.tracker_path
        self.local_tracker_path = data_dir() / "trackers" / resolved.token / resolved.definition.tracker
        self.session = resolved.session.session
        self.animal = resolved.session.animal
        self.project = resolved.session.project
        self.keep_job_logs = keep_job_logs
        self.status = ProcessingStatus[journal.status]
        self.stage = journal.stage
        self.failure: FailureReport | None = FailureReport(journal.reason) if journal.reason else None
        self.job_states: dict[str, JobStatus] = {}
        self.tracker: TrackerState | None = None
        self.missing_since: dict[str, float] = {}
        self._last_tracker_text: str | None = None
        self.local_tracker_path.parent.mkdir(parents=True, exist_ok=True)
        for resolved_job in resolved.all_jobs():
            resolved_job.job.render()  # a value sbatch cannot take fails here, at construction

    # ----------------------------------------------------------------------------------------------------
    # construction
    @classmethod
    def create(
        cls,
        pipeline: ProcessingPipelines | str,
        sessions: Sequence[str | SessionPaths],
        server: Backend,
        *,
        manager_id: int | None = None,
        configs_dir: Path | None = None,
        parameters: Mapping[str, ParameterValue] | None = None,
        keep_job_logs: bool = False,
        dry_run: bool = False,
    ) -> ProcessingPipeline:
        """Builds a pipeline: loads its definition, finds the sessions, resolves every stage and job.

        The run is journaled in the user data folder (so that it can be resumed) unless ``dry_run``.

        Raises:
            PipelineDefinitionError: the definition is invalid.
            SessionNotFoundError: a session does not exist on the server.
            ConfigurationError: bad arguments (no session, several sessions for a session pipeline).
        """
        kind = (
            pipeline if isinstance(pipeline, ProcessingPipelines) else ProcessingPipelines.from_name(pipeline)
        )
        folder = configs_dir or default_configs_dir()
        definition = load_definition(folder / f"{kind.short_name}.yaml")
        paths = _find_sessions(server, kind, definition.scope, sessions)
        params = dict(session_parameters(server, paths[0], set(definition.parameters)))
        params.update(parameters or {})
        resolved = resolve_pipeline(
            definition,
            paths,
            manager_id=manager_id if manager_id is not None else generate_manager_id(),
            environment=server.environment,
            parameters=params,
            exports=server.job_exports,
        )
        journal = RunJournal(
            token=resolved.token,
            pipeline=kind.short_name,
            backend=server.name,
            sessions=tuple(f"{p.project}/{p.animal}/{p.session}" for p in paths),
            manager_id=resolved.manager_id,
            parameters={k: list(v) if isinstance(v, tuple) else v for k, v in resolved.parameters.items()},
            configs_dir=str(folder),
            keep_job_logs=keep_job_logs,
        )
        if not dry_run:
            journal = journal.save()
        return cls(resolved, server, journal, keep_job_logs=keep_job_logs)

    @classmethod
    def resume(cls, journal: RunJournal, server: Backend) -> ProcessingPipeline:
        """Rebuilds a run from its journal: same manager id, run token and job names."""
        definition = load_definition(Path(journal.configs_dir) / f"{journal.pipeline}.yaml")
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
        )
        if resolved.token != journal.token:
            raise ConfigurationError(
                f"Run journal {journal.path} no longer matches its pipeline definition; "
                "delete the journal and start a new run."
            )
        return cls(resolved, server, journal, keep_job_logs=journal.keep_job_logs)

    # ----------------------------------------------------------------------------------------------------
    # cycling
    @property
    def is_running(self) -> bool:
        """True until the run has succeeded, failed or been aborted."""
        return self.status is ProcessingStatus.RUNNING

    def runtime_cycle(self) -> ProcessingStatus:
        """Advances the pipeline by one polling cycle (one remote command when nothing happens)."""
        from sl_pipelines.orchestration.cycle import run_cycle  # noqa: PLC0415 - cycle imports this module

        run_cycle(self.server, [self])
        return self.status

    def probe_request(self) -> ProbeRequest:
        """The jobs (current and next stage, by name) and the tracker this pipeline needs to see."""
        stages = [s for s in (self.stage, self.stage + 1) if s in self.resolved.stages]
        names = tuple(r.name for s in stages for r in self.resolved.stages[s])
        return ProbeRequest(job_names=names, tracker_paths=(self.remote_tracker_path,))

    def decide(
        self, result: ProbeResult, jobs: Mapping[str, JobStatus], now: float
    ) -> Decision | FailureReport:
        """Reads this pipeline's part of a probe and decides what to do.

        Returns a FailureReport instead of a decision when the tracker is corrupt.
        """
        names = {r.name for stage in self.resolved.stages.values() for r in stage}
        self.job_states = {name: status for name, status in jobs.items() if name in names}
        self._record_found_ids()
        text = result.trackers.get(self.remote_tracker_path)
        try:
            self.tracker = None if text is None else parse_tracker_text(text, path=self.remote_tracker_path)
        except TrackerCorruptError as exc:
            return FailureReport(str(exc))
        if text is not None and text != self._last_tracker_text:
            self.local_tracker_path.write_text(text, encoding="utf-8")  # only when it changed
            self._last_tracker_text = text
        view = RunView(
            manager_id=self.manager_id,
            tracker_path=str(self.remote_tracker_path),
            stages={stage: tuple(r.name for r in jobs_) for stage, jobs_ in self.resolved.stages.items()},
            current_stage=self.stage,
            lost_jobs=self._lost_jobs(now),
            submitted=frozenset(self.journal.job_ids),
        )
        return decide(view, self.job_states, self.tracker)

    def _record_found_ids(self) -> None:
        """Journals the ids of this run's jobs found by name (e.g. submitted just before a dropped link)."""
        known = self.journal.job_ids
        new = {
            name: status.job_id
            for name, status in self.job_states.items()
            if name not in known and status.state is not JobState.NOT_FOUND
        }
        if new:
            self.journal = self.journal.save(job_ids={**known, **new})

    def _lost_jobs(self, now: float) -> frozenset[str]:
        if self.stage == 0:
            return frozenset()
        lost = set()
        reported = set(self.tracker.completed_jobs) if self.tracker is not None else set()
        for resolved in self.resolved.stages[self.stage]:
            status = self.job_states.get(resolved.name)
            if resolved.name not in self.journal.job_ids or resolved.name in reported:
                continue
            if status is not None and status.state.is_terminal:
                self.missing_since.pop(resolved.name, None)
                continue
            if status is None or not status.state.is_active:
                since = self.missing_since.setdefault(resolved.name, now)
                if now - since > LOST_JOB_GRACE_SECONDS:
                    lost.add(resolved.name)
            else:
                self.missing_since.pop(resolved.name, None)
        return frozenset(lost)

    def resolved_job(self, name: str) -> ResolvedJob:
        """The resolved job with this name."""
        for resolved in self.resolved.all_jobs():
            if resolved.name == name:
                return resolved
        raise KeyError(name)

    def describe(self) -> str:
        """One line: pipeline, session, stage and status."""
        total = len(self.resolved.stages)
        text = f"{self.pipeline.short_name} {self.project}/{self.animal}/{self.session}: "
        text += f"stage {self.stage}/{total} {self.status.name}"
        if self.failure is not None:
            text += f": {self.failure.reason}"
        return text


def _find_sessions(
    server: Backend, kind: ProcessingPipelines, scope: str, sessions: Sequence[str | SessionPaths]
) -> tuple[SessionPaths, ...]:
    paths = tuple(s if isinstance(s, SessionPaths) else find_session(server, s) for s in sessions)
    if not paths:
        raise ConfigurationError(f"The {kind.short_name} pipeline needs at least one session.")
    if scope == "session" and len(paths) > 1:
        raise ConfigurationError(
            f"The {kind.short_name} pipeline runs on one session at a time; build one pipeline per session."
        )
    return paths
