"""Resolution: a pipeline definition plus a session becomes concrete stages of concrete jobs.

Everything is decided here, once, at construction: job names (carrying the run token), folders,
resources, and every command's argument vector. Placeholders are filled per argument after the template
is split like a shell would, so a value (a session named ``a b;rm -rf ~``) is always one argument.
"""

from __future__ import annotations

import functools
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath

import xxhash

from sl_pipelines.core.definition import JobTemplate, ParameterValue, PipelineDefinition
from sl_pipelines.core.job import Command, Environment, Job, JobDefaults
from sl_pipelines.core.layout import JOB_FOLDERS, SessionPaths
from sl_pipelines.core.retry import RetryPolicy
from sl_pipelines.core.usage import USAGE_DIR_VARIABLE, USAGE_FOLDER
from sl_pipelines.errors import PipelineDefinitionError

JOB_PREFIX = "slp"


@dataclass(frozen=True)
class ResolvedJob:
    """One concrete job of a resolved pipeline."""

    stage: int
    key: str
    job: Job
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @property
    def name(self) -> str:
        """The Slurm job name (unique per run: it carries the run token)."""
        return self.job.name


@dataclass(frozen=True)
class ResolvedPipeline:
    """A pipeline with every stage and job decided.

    Attributes:
        definition: what it was resolved from.
        session: the (main) session's folders.
        sessions: every session of the run (one, or all sessions of a dataset).
        manager_id: the manager that owns the run.
        token: the run token carried by every job name.
        tracker_path: the tracker file on the server.
        stages: stage number (from 1) → jobs of that stage.
        parameters: the parameter values used.
    """

    definition: PipelineDefinition
    session: SessionPaths
    sessions: tuple[SessionPaths, ...]
    manager_id: int
    token: str
    tracker_path: PurePosixPath
    stages: Mapping[int, tuple[ResolvedJob, ...]]
    parameters: Mapping[str, ParameterValue]

    @property
    def job_count(self) -> int:
        """All jobs of all stages: what the tracker counts before it is complete."""
        return sum(len(jobs) for jobs in self.stages.values())

    @functools.cached_property
    def jobs_folder(self) -> PurePosixPath:
        """The folder holding every job folder of this run (made once: every cycle asks for it)."""
        return self.session.working_root / JOB_FOLDERS / self.token

    def all_jobs(self) -> tuple[ResolvedJob, ...]:
        """Every job, in stage order."""
        return tuple(job for stage in sorted(self.stages) for job in self.stages[stage])


def run_token(manager_id: int, pipeline: str, sessions: tuple[SessionPaths, ...]) -> str:
    """A short token unique to one manager's run of one pipeline on one session (or dataset)."""
    ids = ";".join(f"{s.project}/{s.animal}/{s.session}" for s in sessions)
    return xxhash.xxh3_64(f"{manager_id}:{pipeline}:{ids}".encode()).hexdigest()[:12]


def split_job_name(name: str, token: str) -> tuple[int, str]:
    """The stage number and job key of a run's job name (``slp-<token>-<stage>-<key>``); (0, name) for a
    name that is not one of this run's."""
    stage, _, key = name.removeprefix(f"{JOB_PREFIX}-{token}-").partition("-")
    if not name.startswith(f"{JOB_PREFIX}-{token}-") or not stage.isdigit() or not key:
        return 0, name
    return int(stage), key


def resolve_pipeline(
    definition: PipelineDefinition,
    sessions: tuple[SessionPaths, ...],
    *,
    manager_id: int,
    environment: Environment,
    parameters: Mapping[str, ParameterValue] | None = None,
    exports: tuple[tuple[str, str], ...] = (),
    job_defaults: JobDefaults = JobDefaults(),  # noqa: B008 - a frozen, immutable value
) -> ResolvedPipeline:
    """Resolves a definition for one session (or, for dataset scope, a dataset of sessions).

    ``job_defaults`` (the server profile's partition, account, qos, gres) fill what a job's resources
    leave unset; the definition's own values win.

    Raises:
        PipelineDefinitionError: a placeholder or fan-out names a parameter that has no value.
    """
    if not sessions:
        raise ValueError("resolve_pipeline needs at least one session")
    session = sessions[0]
    params: dict[str, ParameterValue] = dict(definition.parameters)
    params.update(parameters or {})
    params["sessions"] = tuple(s.session for s in sessions)  # always the run's sessions, in order
    token = run_token(manager_id, definition.pipeline.short_name, sessions)
    tracker = session.tracker(definition.tracker)
    env = definition.environment if definition.environment is not None else environment
    templates = [
        (number, template) for number, stage in enumerate(definition.stages, 1) for template in stage.jobs
    ]
    expanded = [
        (number, template, key, item)
        for number, template in templates
        for key, item in _fan_out(definition, template, params)
    ]
    context = _Context(
        definition, session, manager_id, token, tracker, len(expanded), params, exports, job_defaults
    )
    stages: dict[int, list[ResolvedJob]] = {}
    for number, template, key, item in expanded:
        # One job per session of a dataset works on THAT session: its project, animal and folders.
        if template.fan_out == "sessions" and item is not None and sessions[item[0]] != session:
            job = replace(context, session=sessions[item[0]]).job(number, template, key, item, env)
        else:
            job = context.job(number, template, key, item, env)
        stages.setdefault(number, []).append(ResolvedJob(number, key, job, template.retry))
    return ResolvedPipeline(
        definition=definition,
        session=session,
        sessions=sessions,
        manager_id=manager_id,
        token=token,
        tracker_path=tracker,
        stages={number: tuple(jobs) for number, jobs in stages.items()},
        parameters=params,
    )


def _fan_out(
    definition: PipelineDefinition, template: JobTemplate, params: Mapping[str, ParameterValue]
) -> list[tuple[str, tuple[int, str] | None]]:
    if template.fan_out is None:
        return [(template.name, None)]
    if template.fan_out not in params:
        raise _error(
            definition, template, f"fan_out names parameter {template.fan_out!r}, which has no value"
        )
    value = params[template.fan_out]
    if isinstance(value, int):
        items = [str(i) for i in range(value)]
    elif isinstance(value, str):
        items = [value]
    else:
        items = list(value)
    if not items:
        raise _error(definition, template, f"fan_out parameter {template.fan_out!r} is empty")
    return [(f"{template.name}-{i}", (i, item)) for i, item in enumerate(items)]


def _error(definition: PipelineDefinition, template: JobTemplate, problem: str) -> PipelineDefinitionError:
    where = definition.source or definition.pipeline.short_name
    return PipelineDefinitionError(
        f"{where}: job {template.name!r}: {problem}; fix the definition or pass --param.",
        path=definition.source,
        key=template.name,
    )


@dataclass(frozen=True)
class _Context:
    """Fills the placeholders of one pipeline's job templates."""

    definition: PipelineDefinition
    session: SessionPaths
    manager_id: int
    token: str
    tracker: PurePosixPath
    job_count: int
    params: Mapping[str, ParameterValue]
    exports: tuple[tuple[str, str], ...]
    job_defaults: JobDefaults

    def job(
        self, stage: int, template: JobTemplate, key: str, item: tuple[int, str] | None, env: Environment
    ) -> Job:
        name = f"{JOB_PREFIX}-{self.token}-{stage}-{key}"
        folder = self.session.working_root / JOB_FOLDERS / self.token / key
        values = self._values(name, item)
        argv = self._command(template, values)
        return Job(
            name=name,
            working_directory=folder,
            commands=(argv,),
            resources=self.job_defaults.fill(template.resources),
            environment=env,
            # sl-worker writes what the job used into its folder (read once by the manager, after the end)
            exports=(
                ("SL_PIPELINES_RUN_TOKEN", self.token),
                (USAGE_DIR_VARIABLE, str(folder.parent / USAGE_FOLDER)),
                *self.exports,
            ),
        )

    @functools.cached_property
    def _run_values(self) -> dict[str, str]:
        """The values every job of this context shares (computed once: a thousand runs resolve at once)."""
        s = self.session
        values = {key: _text(value) for key, value in self.params.items()}
        values.update(
            storage_root=str(s.storage_root),
            working_root=str(s.working_root),
            project=s.project,
            animal=s.animal,
            session=s.session,
            storage_session=str(s.storage_session),
            working_session=str(s.working_session),
            raw_data=str(s.raw_data),
            processed_data=str(s.processed_data),
            tracking_data=str(s.tracking_data),
            tracker=str(self.tracker),
            manager_id=str(self.manager_id),
            job_count=str(self.job_count),
            token=self.token,
            pipeline=self.definition.pipeline.short_name,
        )
        return values

    def _values(self, name: str, item: tuple[int, str] | None) -> dict[str, str]:
        values = dict(self._run_values, job=name)
        if item is not None:
            values.update(index=str(item[0]), item=item[1])
        return values

    def _command(self, template: JobTemplate, values: Mapping[str, str]) -> Command:
        tracked = ("tracker", "manager_id", "job_count", "job")
        session = ("storage_root", "working_root", "project", "animal", "session")
        # ``--key=value`` keeps a value that starts with '-' (a session named '-x') from reading as an option.
        expansions = {
            "{tracked}": [f"--{key.replace('_', '-')}={values[key]}" for key in tracked],
            "{session_args}": [f"--{key.replace('_', '-')}={values[key]}" for key in session],
        }
        try:
            tokens = _split_template(template.command)
        except ValueError as exc:
            raise _error(self.definition, template, f"command is not valid shell syntax ({exc})") from exc
        argv: list[str] = []
        for token in tokens:
            if token in expansions:
                argv.extend(expansions[token])
                continue
            try:
                argv.append(token.format_map(values))
            except KeyError as exc:
                raise _error(self.definition, template, f"unknown placeholder {{{exc.args[0]}}}") from exc
            except (ValueError, IndexError) as exc:
                raise _error(self.definition, template, f"bad placeholder in {token!r} ({exc})") from exc
        return tuple(argv)


@functools.lru_cache(maxsize=256)
def _split_template(command: str) -> tuple[str, ...]:
    """A command template split like a shell line (the same few templates, for every run)."""
    return tuple(shlex.split(command))


def _text(value: ParameterValue) -> str:
    return ",".join(value) if isinstance(value, tuple) else str(value)


def with_gates(resolved: ResolvedPipeline) -> ResolvedPipeline:
    """The same run for detached mode: every job after stage 1 first runs a gate that lets it work only
    when the previous stage completed (every job reported) and no failure is recorded; otherwise the
    gate records why and the job exits without doing its work."""
    stages: dict[int, tuple[ResolvedJob, ...]] = {}
    previous: tuple[str, ...] = ()
    for number in sorted(resolved.stages):
        jobs = resolved.stages[number]
        if previous:
            jobs = tuple(
                replace(r, job=replace(r.job, commands=(_gate(resolved, r.name, previous), *r.job.commands)))
                for r in jobs
            )
        stages[number] = jobs
        previous = tuple(r.name for r in resolved.stages[number])
    return replace(resolved, stages=stages)


def _gate(resolved: ResolvedPipeline, job: str, previous: tuple[str, ...]) -> tuple[str, ...]:
    tracker, manager = str(resolved.tracker_path), str(resolved.manager_id)
    return ("sl-tracker", "gate", tracker, "--manager-id", manager, "--job", job, "--after", *previous)
