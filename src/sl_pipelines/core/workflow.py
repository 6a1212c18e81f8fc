"""Workflows: pipelines in order per session, loaded from ``configs/workflows/<name>.yaml`` (pure: no I/O
beyond reading the file).

A workflow names steps; a step is one pipeline or a list of pipelines that run side by side on the
session. Each session advances on its own: a step starts when every pipeline of the previous step
succeeded on that session, and a failure stops only that session's later steps. A dataset pipeline
(``multiday``, ``forging``) may be the last step: it runs once over the sessions that reached it. After
the workflow the manifest of every project touched is regenerated (by the orchestration)::

    workflow: lab-daily
    description: Verify, prepare, process and archive each new session.
    steps:
      - checksum
      - preparation
      - [behavior, suite2p, video]
      - archiving

:func:`session_next` is the one decision: given what already ended on a session, what to do now.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath

import yaml

from sl_pipelines.core.tracker_text import parse_tracker_text
from sl_pipelines.errors import ConfigurationError, PipelineDefinitionError, TrackerCorruptError
from sl_pipelines.vocabulary import ProcessingPipelines, ProcessingStatus

WORKFLOWS_FOLDER = "workflows"
DATASET_PIPELINES = frozenset({ProcessingPipelines.MULTIDAY, ProcessingPipelines.FORGING})
_TOP_KEYS = frozenset({"workflow", "description", "steps"})
COMPLETE = "every step already complete"  # why --pending leaves a session out

Step = tuple[ProcessingPipelines, ...]
_Fail = Callable[[str, str], PipelineDefinitionError]


@dataclass(frozen=True)
class WorkflowDefinition:
    """A workflow as declared in YAML.

    Attributes:
        name: the workflow's name (``lab-daily``).
        steps: the per-session steps in order; each holds pipelines that run side by side.
        dataset: the dataset pipelines of the last step (run once over the sessions that reached it), or ().
        description: one line for ``--help`` and dry runs.
        source: the file it was loaded from.
    """

    name: str
    steps: tuple[Step, ...]
    dataset: Step = ()
    description: str = ""
    source: Path | None = None

    @property
    def pipelines(self) -> tuple[ProcessingPipelines, ...]:
        """Every per-session pipeline, in order."""
        return tuple(p for step in self.steps for p in step)

    def describe(self) -> str:
        """``checksum → preparation → [behavior, suite2p, video] → archiving``."""
        steps = (*self.steps, self.dataset) if self.dataset else self.steps
        return " → ".join(_step_text(step) for step in steps)


def _step_text(step: Step) -> str:
    names = [p.short_name for p in step]
    return names[0] if len(names) == 1 else f"[{', '.join(names)}]"


def workflow_path(configs_dir: Path, name: str) -> Path:
    """Where the workflow ``name`` is defined.

    Raises:
        ConfigurationError: the name could leave the workflows folder.
    """
    if not name or "/" in name or name.startswith(".") or "\0" in name:
        raise ConfigurationError(f"Workflow name {name!r} must be a plain name such as lab-daily.")
    return configs_dir / WORKFLOWS_FOLDER / f"{name}.yaml"


def available_workflows(configs_dir: Path) -> tuple[str, ...]:
    """The names of the workflows defined in ``configs_dir/workflows``."""
    return tuple(sorted(p.stem for p in (configs_dir / WORKFLOWS_FOLDER).glob("*.yaml")))


def load_workflow(path: Path) -> WorkflowDefinition:
    """Loads and validates one workflow file.

    Raises:
        PipelineDefinitionError: the file is missing, not YAML, or not a valid workflow (names the file).
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PipelineDefinitionError(f"Cannot read workflow {path}: {exc.strerror}.", path=path) from exc
    except yaml.YAMLError as exc:
        raise PipelineDefinitionError(f"{path}: not valid YAML ({exc}).", path=path) from exc
    return parse_workflow(data, source=path)


def parse_workflow(data: object, *, source: Path | None = None) -> WorkflowDefinition:
    """Validates a workflow already parsed from YAML (see :func:`load_workflow`)."""
    where = str(source) if source is not None else "workflow"

    def fail(key: str, problem: str) -> PipelineDefinitionError:
        return PipelineDefinitionError(f"{where}: {key}: {problem}.", path=source, key=key)

    if not isinstance(data, dict):
        raise fail("(document)", "must be a mapping with 'workflow' and 'steps'")
    unknown = sorted(set(map(str, data)) - _TOP_KEYS)
    if unknown:
        raise fail(unknown[0], f"unknown key (expected one of {', '.join(sorted(_TOP_KEYS))})")
    name = data.get("workflow")
    if not isinstance(name, str) or not name.strip():
        raise fail("workflow", "must be the workflow's name")
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise fail("steps", "must be a list of pipelines (a list inside it runs side by side)")
    steps = [_parse_step(item, f"steps[{i}]", fail) for i, item in enumerate(raw_steps)]
    seen: set[ProcessingPipelines] = set()
    for index, step in enumerate(steps):
        key = f"steps[{index}]"
        if seen & set(step) or len(set(step)) < len(step):
            raise fail(key, "names a pipeline that an earlier step already runs")
        seen |= set(step)
        if ProcessingPipelines.MANIFEST in step:
            raise fail(key, "manifest runs by itself after every workflow; leave it out of the steps")
        dataset = DATASET_PIPELINES & set(step)
        if dataset and (index != len(steps) - 1 or len(dataset) < len(step)):
            raise fail(key, "a dataset pipeline (multiday, forging) may only be the last step, and alone")
    last = steps[-1]
    has_dataset = bool(DATASET_PIPELINES & set(last))
    session_steps = tuple(steps[:-1] if has_dataset else steps)
    description = data.get("description") or ""
    return WorkflowDefinition(
        name=name.strip(),
        steps=session_steps,
        dataset=last if has_dataset else (),
        description=str(description),
        source=source,
    )


def _parse_step(item: object, key: str, fail: _Fail) -> Step:
    names = item if isinstance(item, list) else [item]
    if not names or not all(isinstance(n, str) for n in names):
        raise fail(key, "must be a pipeline name or a non-empty list of pipeline names")
    try:
        return tuple(ProcessingPipelines.from_name(str(n)) for n in names)
    except ValueError as exc:
        raise fail(key, str(exc).rstrip(".")) from exc


class NextKind(StrEnum):
    """What a session needs now."""

    START = "start"  # start these pipelines (the next step)
    WAIT = "wait"  # pipelines of the current step still run
    DONE = "done"  # every step succeeded: the session reached the dataset step
    STOPPED = "stopped"  # a step failed (or the session's lock was lost): no later step will run


@dataclass(frozen=True)
class SessionNext:
    """The decision for one session.

    Attributes:
        kind: start, wait, done or stopped.
        pipelines: the pipelines to start (START), or those still running (WAIT).
        step: the index of the step concerned (``len(steps)`` when done).
        reason: why the session stopped (STOPPED, or WAIT while a failed step's siblings finish).
    """

    kind: NextKind
    pipelines: Step = ()
    step: int = 0
    reason: str = ""


def session_next(
    workflow: WorkflowDefinition,
    ended: Mapping[ProcessingPipelines, ProcessingStatus],
    *,
    started: Sequence[ProcessingPipelines] = (),
    complete: Sequence[ProcessingPipelines] = (),
    stop_reason: str = "",
) -> SessionNext:
    """What a session needs now, from the pipelines that ended on it in this workflow run.

    Args:
        workflow: the workflow.
        ended: how each pipeline that ended on the session in this run ended.
        started: pipelines started in this run that may still run (those not in ``ended`` still run).
        complete: pipelines whose tracker was already complete when the run began (with ``--pending``):
            their steps count as done and are not run again.
        stop_reason: the session must not go on (its lock was lost): no step starts any more.
    """
    running = tuple(p for p in started if p not in ended)
    index, failure, waiting = _current_step(workflow, ended, complete)
    reason = failure or stop_reason
    if running:
        return SessionNext(NextKind.WAIT, running, index, reason)
    if reason:
        return SessionNext(NextKind.STOPPED, (), index, reason)
    if waiting:
        return SessionNext(NextKind.START, waiting, index)
    return SessionNext(NextKind.DONE, (), index)


def _current_step(
    workflow: WorkflowDefinition,
    ended: Mapping[ProcessingPipelines, ProcessingStatus],
    complete: Sequence[ProcessingPipelines],
) -> tuple[int, str, Step]:
    """The first step not passed yet: its index, what failed in it, and its pipelines not started yet."""
    for index, step in enumerate(workflow.steps):
        todo = tuple(p for p in step if p not in complete)
        failed = [p for p in todo if p in ended and ended[p] is not ProcessingStatus.SUCCEEDED]
        if failed:
            return index, ", ".join(f"{p.short_name} {ended[p].name.lower()}" for p in failed), ()
        waiting = tuple(p for p in todo if p not in ended)
        if waiting:
            return index, "", waiting
    return len(workflow.steps), "", ()


def is_settled(decision: SessionNext) -> bool:
    """True when nothing more will happen to the session in this run (done or stopped)."""
    return decision.kind in (NextKind.DONE, NextKind.STOPPED)


def dataset_groups(
    workflow: WorkflowDefinition, decisions: Mapping[str, SessionNext]
) -> tuple[tuple[ProcessingPipelines, tuple[str, ...]], ...]:
    """The dataset step: each dataset pipeline over the sessions (``project/animal/session``) that reached
    it, one dataset per project; nothing when the workflow has no dataset step or no session reached it.

    Raises:
        ValueError: a session has not settled yet (the dataset step waits for every session).
    """
    if not all(is_settled(d) for d in decisions.values()):
        raise ValueError("the dataset step waits until every session is done or stopped")
    reached = sorted(s for s, d in decisions.items() if d.kind is NextKind.DONE)
    by_project: dict[str, list[str]] = {}
    for session in reached:
        by_project.setdefault(session.split("/", 1)[0], []).append(session)
    return tuple((p, tuple(group)) for p in workflow.dataset for group in by_project.values())


def projects_touched(sessions: Sequence[str]) -> tuple[str, ...]:
    """The projects of ``project/animal/session`` names, in order of first appearance."""
    return tuple(dict.fromkeys(s.split("/", 1)[0] for s in sessions))


def tracker_phases(
    workflow: WorkflowDefinition, trackers: Mapping[str, str], folder: PurePosixPath
) -> dict[ProcessingPipelines, str]:
    """The phase (``idle``, ``running``, ``complete``, ``failed``, ``corrupt``) of each per-session pipeline's
    tracker, from the tracker texts a selection read (``folder`` is the session's tracking folder)."""
    phases = {}
    for pipeline in workflow.pipelines:
        name = pipeline.tracker_file.value
        text = trackers.get(name)
        try:
            state = None if text is None else parse_tracker_text(text, path=folder / name)
            phases[pipeline] = "idle" if state is None else state.phase.value
        except TrackerCorruptError:
            phases[pipeline] = "corrupt"
    return phases


def skip_reason(phases: Mapping[ProcessingPipelines, str], *, pending: bool, failed: bool) -> str:
    """Why ``--pending`` (every step already complete) or ``--failed`` (no step failed) leaves a session
    out; "" keeps it."""
    if pending and phases and all(phase == "complete" for phase in phases.values()):
        return COMPLETE
    if failed and "failed" not in phases.values():
        return "no step of it failed"
    return ""


def dataset_members(
    workflow: WorkflowDefinition, running: Sequence[str], complete: Sequence[str]
) -> tuple[str, ...]:
    """Of the sessions ``--pending`` would leave out because every step is complete, those that join the
    run anyway: a workflow with a dataset step makes each project's dataset again over all the sessions
    that reached it, so a project where a session runs brings back its complete ones (every step skipped).

    Args:
        workflow: the workflow.
        running: the sessions (``project/animal/session``) that run some step.
        complete: the sessions where every step is complete.
    """
    if not workflow.dataset:
        return ()
    projects = set(projects_touched(running))
    return tuple(name for name in complete if name.split("/", 1)[0] in projects)
