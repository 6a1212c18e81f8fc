"""WorkflowRun: a workflow over many sessions, driven by one PipelineManager (one probe per cycle).

Every session is locked to the run first (one call, :mod:`session_locks`). Then each session advances on
its own: as soon as a step's pipelines ended on a session, :func:`~sl_pipelines.core.workflow.session_next`
says what comes next, and its pipelines join the same manager (their claims and submissions batched with
everyone else's). A failure stops only that session; a session whose lock another workflow took or
someone released stops too. When every session has settled, the dataset step (if any) runs over the
sessions that reached it, then the manifest of every project touched is regenerated, and the locks go.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from sl_pipelines.core.seams import Backend
from sl_pipelines.core.session_query import FoundSession
from sl_pipelines.core.workflow import (
    NextKind,
    SessionNext,
    WorkflowDefinition,
    dataset_groups,
    is_settled,
    projects_touched,
    session_next,
)
from sl_pipelines.errors import SlPipelinesError
from sl_pipelines.orchestration.manager import PipelineManager
from sl_pipelines.orchestration.pipeline import ProcessingPipeline
from sl_pipelines.orchestration.session_locks import Refusal, lock_path, release_locks, take_locks
from sl_pipelines.vocabulary import ProcessingPipelines, ProcessingStatus

logger = logging.getLogger("sl_pipelines")


class Phase(StrEnum):
    """Where a workflow run stands."""

    SESSIONS = "sessions"  # sessions advance through their steps
    DATASET = "dataset"  # the dataset step runs over the sessions that reached it
    MANIFEST = "manifest"  # the manifests of the projects touched are regenerated
    FINISHED = "finished"


@dataclass
class SessionProgress:
    """One session in a workflow run: its pipeline runs, and what it needs now."""

    found: FoundSession
    complete: tuple[ProcessingPipelines, ...] = ()  # already complete before the run (--pending)
    runs: dict[ProcessingPipelines, ProcessingPipeline] = field(default_factory=dict)
    errors: dict[ProcessingPipelines, str] = field(default_factory=dict)  # pipelines that could not start
    stop_reason: str = ""  # the session must not go on (its lock was lost)
    decision: SessionNext = field(default_factory=lambda: SessionNext(NextKind.START))

    @property
    def name(self) -> str:
        """``project/animal/session``."""
        p = self.found.paths
        return f"{p.project}/{p.animal}/{p.session}"

    def decide(self, workflow: WorkflowDefinition) -> SessionNext:
        """What the session needs now (kept in ``decision``)."""
        ended = {p: r.status for p, r in self.runs.items() if not r.is_running}
        ended.update(dict.fromkeys(self.errors, ProcessingStatus.FAILED))
        self.decision = session_next(
            workflow,
            ended,
            started=tuple(self.runs),
            complete=self.complete,
            stop_reason=self.stop_reason,
        )
        return self.decision


class WorkflowRun:
    """A workflow over sessions, on one backend.

    Args:
        workflow: the workflow definition.
        backend: where the pipelines run.
        sessions: the sessions, each with the pipelines already complete on it (skipped; ``--pending``).
        configs_dir: the folder of pipeline definitions (None: the package's).
        keep_job_logs: keep job folders and logs after success.
    """

    def __init__(
        self,
        workflow: WorkflowDefinition,
        backend: Backend,
        sessions: Sequence[tuple[FoundSession, Sequence[ProcessingPipelines]]],
        *,
        configs_dir: Path | None = None,
        keep_job_logs: bool = False,
    ) -> None:
        self.workflow = workflow
        self.backend = backend
        self.token = f"{workflow.name}-{uuid.uuid4().hex[:12]}"
        self.sessions = [SessionProgress(found, tuple(done)) for found, done in sessions]
        self.configs_dir = configs_dir
        self.keep_job_logs = keep_job_logs
        self.phase = Phase.SESSIONS
        self.refused: list[Refusal] = []
        self.dataset_runs: list[ProcessingPipeline] = []
        self.manifest_runs: list[ProcessingPipeline] = []
        self.final_errors: list[str] = []  # dataset or manifest runs that could not start
        self.locked: list[SessionProgress] = []
        for progress in self.sessions:
            progress.decide(workflow)

    # ------------------------------------------------------------------------------------- locks
    def lock(self, manager: PipelineManager) -> list[Refusal]:
        """Locks every session to this run (one call); sessions another live workflow holds are left out
        of the run and returned, each with its owner."""
        started = datetime.now(tz=UTC).isoformat(timespec="seconds")
        holder = replace(
            manager.holder, holder_id=self.token, details=(("workflow", self.token), ("started", started))
        )
        wanted = [(s.name, s.found.paths) for s in self.sessions]
        taken, self.refused = take_locks(self.backend, wanted, holder)
        kept = set(taken)
        self.sessions = [s for s in self.sessions if s.name in kept]
        self.locked = list(self.sessions)
        manager.extra_leases = tuple((lock_path(s.found.paths), self.token) for s in self.locked)
        for refusal in self.refused:
            logger.warning("Left out %s: it is locked by %s.", refusal.session, refusal.owner)
        return self.refused

    def release(self, manager: PipelineManager | None = None) -> None:
        """Removes the locks this run still holds (one call)."""
        lost = set(manager.lost_leases) if manager is not None else set()
        held = [s.found.paths for s in self.locked if lock_path(s.found.paths) not in lost]
        for problem in release_locks(self.backend, held):
            if problem:
                logger.warning("%s", problem)
        self.locked = []
        if manager is not None:
            manager.extra_leases = ()

    # ------------------------------------------------------------------------------------- running
    def run(
        self,
        manager: PipelineManager,
        observer: Callable[[PipelineManager], None] | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> bool:
        """Locks the sessions, drives the workflow with ``manager`` until it has finished, then lets the
        locks go; True when every session reached the end and every pipeline succeeded."""
        self.lock(manager)
        self.advance(manager)
        if sleep is None:
            manager.run(observer=observer, advance=self.advance)
        else:
            manager.run(observer=observer, sleep=sleep, advance=self.advance)
        self.release(manager)
        return self.succeeded

    @property
    def succeeded(self) -> bool:
        """True when every session reached the end and nothing failed or was refused."""
        runs = self.pipelines
        return (
            not self.refused
            and not self.final_errors
            and all(s.decision.kind is NextKind.DONE for s in self.sessions)
            and all(p.status is ProcessingStatus.SUCCEEDED for p in runs)
        )

    @property
    def pipelines(self) -> list[ProcessingPipeline]:
        """Every pipeline run started so far."""
        per_session = [run for s in self.sessions for run in s.runs.values()]
        return [*per_session, *self.dataset_runs, *self.manifest_runs]

    def advance(self, manager: PipelineManager) -> None:
        """Starts what the sessions (and then the dataset step and the manifests) need now."""
        for progress in self.sessions:
            if lock_path(progress.found.paths) in manager.lost_leases and not progress.stop_reason:
                holder = manager.lost_leases[lock_path(progress.found.paths)] or "nobody (released)"
                progress.stop_reason = f"its workflow lock was taken from this run (now: {holder})"
                logger.warning("%s: %s; no later step will start.", progress.name, progress.stop_reason)
        new: list[ProcessingPipeline] = []
        if self.phase is Phase.SESSIONS:
            new += self._advance_sessions()
        if self.phase is Phase.SESSIONS and all(is_settled(s.decision) for s in self.sessions):
            self.phase = Phase.DATASET
            new += self._start_dataset()
        if self.phase is Phase.DATASET and not any(r.is_running for r in self.dataset_runs):
            self.phase = Phase.MANIFEST
            new += self._start_manifests()
        if self.phase is Phase.MANIFEST and not any(r.is_running for r in self.manifest_runs):
            self.phase = Phase.FINISHED
        if new:
            manager.add(new)

    def _advance_sessions(self) -> list[ProcessingPipeline]:
        new: list[ProcessingPipeline] = []
        for progress in self.sessions:
            decision = progress.decide(self.workflow)
            if decision.kind is not NextKind.START:
                continue
            for pipeline in decision.pipelines:
                try:
                    run = self._create(pipeline, [progress.found])
                except SlPipelinesError as exc:
                    progress.errors[pipeline] = str(exc)
                    logger.warning("%s: %s could not start: %s", progress.name, pipeline.short_name, exc)
                    continue
                progress.runs[pipeline] = run
                new.append(run)
            progress.decide(self.workflow)
        return new

    def _start_dataset(self) -> list[ProcessingPipeline]:
        by_name = {s.name: s.found for s in self.sessions}
        decisions = {s.name: s.decision for s in self.sessions}
        for pipeline, names in dataset_groups(self.workflow, decisions):
            try:
                self.dataset_runs.append(self._create(pipeline, [by_name[n] for n in names]))
            except SlPipelinesError as exc:
                self.final_errors.append(f"{pipeline.short_name} over {', '.join(names)}: {exc}")
        return list(self.dataset_runs)

    def _start_manifests(self) -> list[ProcessingPipeline]:
        first: dict[str, FoundSession] = {}
        for progress in self.sessions:
            first.setdefault(progress.found.paths.project, progress.found)
        for project in projects_touched([s.name for s in self.sessions]):
            try:
                self.manifest_runs.append(self._create(ProcessingPipelines.MANIFEST, [first[project]]))
            except SlPipelinesError as exc:
                self.final_errors.append(f"manifest of {project}: {exc}")
        return list(self.manifest_runs)

    def _create(self, pipeline: ProcessingPipelines, sessions: Sequence[FoundSession]) -> ProcessingPipeline:
        return ProcessingPipeline.create(
            pipeline, sessions, self.backend, configs_dir=self.configs_dir, keep_job_logs=self.keep_job_logs
        )
