"""Pipeline definitions: the YAML files in ``configs/``, loaded and validated into frozen data classes.

A definition says which tracker a pipeline reports into, what environment its jobs activate, and its
stages in order; each stage holds jobs that run in parallel, each job a command template with
placeholders, its resources and an optional fan-out (one job per plane, per camera, per session).
Validation names the file, the key and what is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sl_pipelines.core.job import Environment, EnvironmentKind, Resources
from sl_pipelines.core.retry import RETRYABLE_STATES, RetryPolicy
from sl_pipelines.core.stalls import THRESHOLD_NAMES
from sl_pipelines.core.states import JobState
from sl_pipelines.errors import ConfigurationError, PipelineDefinitionError
from sl_pipelines.vocabulary import ProcessingPipelines, TrackerFileNames

ParameterValue = int | str | tuple[str, ...]

# libyaml's safe loader when PyYAML has it (~10x faster: a manager building a thousand runs reads the
# definition a thousand times).
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_RESOURCE_KEYS = ("cpus", "memory_gb", "time_limit_minutes", "partition", "account", "qos", "gres")
_RETRY_KEYS = (
    "retries",
    "retry_on",
    "memory_factor",
    "time_factor",
    "max_memory_gb",
    "max_time_limit_minutes",
)
_JOB_KEYS = frozenset({"name", "command", "fan_out", *_RESOURCE_KEYS, *_RETRY_KEYS})
_TOP_KEYS = frozenset(
    {
        "pipeline",
        "description",
        "tracker",
        "environment",
        "scope",
        "defaults",
        "parameters",
        "stages",
        "stalls",
    }
)


@dataclass(frozen=True)
class JobTemplate:
    """One job of a stage, before placeholders are filled in."""

    name: str
    command: str
    resources: Resources
    fan_out: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass(frozen=True)
class StageTemplate:
    """A stage: jobs that run in parallel; the next stage starts when all of them have succeeded."""

    name: str
    jobs: tuple[JobTemplate, ...]


@dataclass(frozen=True)
class PipelineDefinition:
    """A whole pipeline as declared in YAML.

    Attributes:
        pipeline: which of the nine pipelines this is.
        tracker: the tracker file name in the session's tracking folder.
        environment: what jobs activate; None means the backend's default environment.
        scope: ``session`` (one pipeline per session) or ``dataset`` (one pipeline over all given sessions).
        parameters: default values of parameters used by placeholders and fan-outs.
        stages: the stages in order.
        source: the file it was loaded from.
        stalls: the stall thresholds this pipeline sets (``stalls:``, see
            :class:`~sl_pipelines.core.stalls.StallThresholds`); the others keep their defaults.
    """

    pipeline: ProcessingPipelines
    tracker: str
    environment: Environment | None
    scope: str
    parameters: Mapping[str, ParameterValue]
    stages: tuple[StageTemplate, ...]
    source: Path | None = None
    description: str = ""
    defaults: Resources = field(default_factory=Resources)
    retry_defaults: RetryPolicy = field(default_factory=RetryPolicy)
    stalls: Mapping[str, float] = field(default_factory=dict)


class _Checker:
    """Collects the location of each value so that an error names the file and the key."""

    def __init__(self, source: Path | None) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> PipelineDefinitionError:
        where = f"{self.source}" if self.source else "pipeline definition"
        return PipelineDefinitionError(
            f"{where}: {key}: {problem}; fix the file and try again.", path=self.source, key=key
        )

    def mapping(self, value: object, key: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(key, f"expected a mapping, got {type(value).__name__}")
        return value

    def text(self, value: object, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"expected a non-empty text, got {value!r}")
        return value.strip()

    def positive(self, value: object, key: str, kind: type[int] | type[float]) -> Any:
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise self.fail(key, f"expected a positive {kind.__name__}, got {value!r}")
        if kind is int and not isinstance(value, int):
            raise self.fail(key, f"expected a positive whole number, got {value!r}")
        return kind(value)

    def unknown(self, data: Mapping[str, Any], allowed: frozenset[str], key: str) -> None:
        extra = sorted(set(data) - allowed)
        if extra:
            raise self.fail(f"{key}{extra[0]}", f"unknown key (allowed: {', '.join(sorted(allowed))})")


def load_definition(path: Path) -> PipelineDefinition:
    """Loads and validates one pipeline definition file.

    Raises:
        PipelineDefinitionError: the file is missing, not YAML, or does not match the schema; the
            message names the file and the key.
    """
    checker = _Checker(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)  # noqa: S506 - a safe loader
    except OSError as exc:
        raise PipelineDefinitionError(
            f"Cannot read pipeline definition {path}: {exc.strerror}.", path=path
        ) from exc
    except yaml.YAMLError as exc:
        raise checker.fail("(document)", f"not valid YAML ({exc})") from exc
    return parse_definition(data, source=path)


def parse_definition(data: object, *, source: Path | None = None) -> PipelineDefinition:
    """Validates a definition already parsed from YAML (see :func:`load_definition`)."""
    check = _Checker(source)
    top = check.mapping(data, "(document)")
    check.unknown(top, _TOP_KEYS, "")
    try:
        pipeline = ProcessingPipelines.from_name(check.text(top.get("pipeline"), "pipeline"))
    except ValueError as exc:
        raise check.fail("pipeline", str(exc).rstrip(".")) from exc
    tracker = check.text(top.get("tracker", pipeline.tracker_file.value), "tracker")
    if tracker not in {t.value for t in TrackerFileNames} and not tracker.endswith(".yaml"):
        raise check.fail("tracker", f"expected a .yaml file name, got {tracker!r}")
    scope = top.get("scope", "session")
    if scope not in ("session", "dataset"):
        raise check.fail("scope", f"expected 'session' or 'dataset', got {scope!r}")
    defaults = _resources(check, top.get("defaults", {}), "defaults", Resources())
    retry = _retry(check, top.get("defaults", {}), "defaults", RetryPolicy())
    stages_data = top.get("stages")
    if not isinstance(stages_data, list) or not stages_data:
        raise check.fail("stages", "expected a non-empty list of stages")
    stages = tuple(_stage(check, item, f"stages[{i}]", defaults, retry) for i, item in enumerate(stages_data))
    return PipelineDefinition(
        pipeline=pipeline,
        tracker=tracker,
        environment=_environment(check, top.get("environment", "default")),
        scope=scope,
        parameters=_parameters(check, top.get("parameters", {})),
        stages=stages,
        source=source,
        description=str(top.get("description", "")).strip(),
        defaults=defaults,
        retry_defaults=retry,
        stalls=_stalls(check, top.get("stalls", {})),
    )


def _stalls(check: _Checker, value: object) -> dict[str, float]:
    values = check.mapping(value, "stalls")
    check.unknown(values, frozenset(THRESHOLD_NAMES), "stalls.")
    stalls = {key: check.positive(item, f"stalls.{key}", float) for key, item in values.items()}
    if stalls.get("limit_fraction", 0.0) > 1:
        fraction = stalls["limit_fraction"]
        raise check.fail("stalls.limit_fraction", f"expected a fraction up to 1, got {fraction}")
    return stalls


def _stage(check: _Checker, data: object, key: str, defaults: Resources, retry: RetryPolicy) -> StageTemplate:
    stage = check.mapping(data, key)
    check.unknown(stage, frozenset({"name", "jobs"}), f"{key}.")
    name = check.text(stage.get("name"), f"{key}.name")
    jobs_data = stage.get("jobs")
    if not isinstance(jobs_data, list) or not jobs_data:
        raise check.fail(f"{key}.jobs", "expected a non-empty list of jobs")
    jobs = tuple(_job(check, item, f"{key}.jobs[{i}]", defaults, retry) for i, item in enumerate(jobs_data))
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        raise check.fail(f"{key}.jobs", f"job names must be unique within a stage, got {names}")
    return StageTemplate(name=name, jobs=jobs)


def _job(check: _Checker, data: object, key: str, defaults: Resources, retry: RetryPolicy) -> JobTemplate:
    job = check.mapping(data, key)
    check.unknown(job, _JOB_KEYS, f"{key}.")
    name = check.text(job.get("name"), f"{key}.name")
    if not name.replace("_", "").replace("-", "").isalnum():
        raise check.fail(f"{key}.name", f"use letters, digits, '_' and '-' only, got {name!r}")
    fan_out = job.get("fan_out")
    if fan_out is not None:
        fan_out = check.text(fan_out, f"{key}.fan_out")
    return JobTemplate(
        name=name,
        command=check.text(job.get("command"), f"{key}.command"),
        resources=_resources(check, job, key, defaults),
        fan_out=fan_out,
        retry=_retry(check, job, key, retry),
    )


def _resources(check: _Checker, data: object, key: str, base: Resources) -> Resources:
    values = check.mapping(data, key)
    if key == "defaults":
        check.unknown(values, frozenset((*_RESOURCE_KEYS, *_RETRY_KEYS)), "defaults.")
    cpus = check.positive(values.get("cpus", base.cpus), f"{key}.cpus", int)
    base_gb = base.memory_mb / 1024
    memory = check.positive(values.get("memory_gb", base_gb), f"{key}.memory_gb", float)
    minutes = check.positive(
        values.get("time_limit_minutes", base.time_limit_minutes), f"{key}.time_limit_minutes", int
    )
    optional: dict[str, str | None] = {}
    for name in ("partition", "account", "qos", "gres"):
        value = values.get(name, getattr(base, name))
        optional[name] = None if value is None else check.text(value, f"{key}.{name}")
    return Resources(cpus=cpus, memory_mb=round(memory * 1024), time_limit_minutes=minutes, **optional)


def _retry(check: _Checker, data: object, key: str, base: RetryPolicy) -> RetryPolicy:
    """The retry policy of a job (or the pipeline's default one), each key falling back to ``base``."""
    values = check.mapping(data, key)
    retries = values.get("retries", base.retries)
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise check.fail(f"{key}.retries", f"expected a whole number of 0 or more, got {retries!r}")
    factors = {}
    for name in ("memory_factor", "time_factor"):
        factor = check.positive(values.get(name, getattr(base, name)), f"{key}.{name}", float)
        if factor < 1:
            raise check.fail(f"{key}.{name}", f"expected a factor of 1 or more, got {factor!r}")
        factors[name] = factor
    max_memory = values.get("max_memory_gb", base.max_memory_gb)
    if max_memory is not None:
        max_memory = check.positive(max_memory, f"{key}.max_memory_gb", float)
    max_minutes = values.get("max_time_limit_minutes", base.max_time_limit_minutes)
    if max_minutes is not None:
        max_minutes = check.positive(max_minutes, f"{key}.max_time_limit_minutes", int)
    return RetryPolicy(
        retries=retries,
        retry_on=_retry_on(check, values.get("retry_on"), f"{key}.retry_on", base.retry_on),
        max_memory_gb=max_memory,
        max_time_limit_minutes=max_minutes,
        **factors,
    )


def _retry_on(check: _Checker, value: object, key: str, base: frozenset[JobState]) -> frozenset[JobState]:
    if value is None:
        return base
    allowed = ", ".join(sorted(state.value for state in RETRYABLE_STATES))
    if not isinstance(value, list) or not value:
        raise check.fail(key, f"expected a non-empty list of Slurm states (any of {allowed})")
    states = []
    for item in value:
        state = JobState.parse(str(item))
        if state not in RETRYABLE_STATES:
            raise check.fail(key, f"{item!r} is not a state that can be retried (use any of {allowed})")
        states.append(state)
    return frozenset(states)


def _environment(check: _Checker, data: object) -> Environment | None:
    if data == "default":
        return None
    if data in ("none", None):
        return Environment()
    env = check.mapping(data, "environment")
    check.unknown(env, frozenset({"venv", "conda", "modules"}), "environment.")
    modules_data = env.get("modules", [])
    if not isinstance(modules_data, list) or not all(isinstance(m, str) for m in modules_data):
        raise check.fail("environment.modules", "expected a list of module names")
    modules = tuple(modules_data)
    if "venv" in env and "conda" in env:
        raise check.fail("environment", "give either venv or conda, not both")
    if "venv" in env:
        return Environment(EnvironmentKind.VENV, check.text(env["venv"], "environment.venv"), modules)
    if "conda" in env:
        return Environment(EnvironmentKind.CONDA, check.text(env["conda"], "environment.conda"), modules)
    if modules:
        return Environment(EnvironmentKind.MODULES, "", modules)
    raise check.fail("environment", "expected 'default', 'none', or a mapping with venv, conda or modules")


def _parameters(check: _Checker, data: object) -> dict[str, ParameterValue]:
    params = check.mapping(data, "parameters")
    result: dict[str, ParameterValue] = {}
    for name, value in params.items():
        result[str(name)] = coerce_parameter(
            value, lambda problem, n=name: check.fail(f"parameters.{n}", problem)
        )
    return result


def coerce_parameter(value: object, fail: Any) -> ParameterValue:
    """Turns a YAML/CLI value into a parameter: an integer, a text, or a list of texts."""
    if isinstance(value, bool):
        raise fail(f"expected a number, a text or a list, got {value!r}")
    if isinstance(value, int | str):
        return value
    if isinstance(value, list) and all(isinstance(v, str | int) for v in value):
        return tuple(str(v) for v in value)
    raise fail(f"expected a number, a text or a list, got {value!r}")


def conform_parameter(key: str, value: object, default: ParameterValue | None, source: str) -> ParameterValue:
    """Checks a given parameter value against the definition's default and gives it the same kind.

    A whole number stays a whole number (``"4"`` is 4, ``4.0`` is an error), a list stays a list (a text
    ``face,left`` is the list ``face``, ``left``), a text stays a text. A parameter the definition does
    not declare is taken as it is.

    Raises:
        ConfigurationError: the value cannot be of the default's kind; names ``source`` and ``key``.
    """

    def fail(problem: str) -> ConfigurationError:
        return ConfigurationError(f"{source}: parameter {key!r} {problem}.", key=key)

    if isinstance(default, bool) or isinstance(value, bool | float):
        raise fail(f"must be {_kind_of(default)}, not {value!r}")
    if isinstance(default, int):
        text = str(value).strip()
        if isinstance(value, int) or (isinstance(value, str) and text.isdigit()):
            return int(text)
        raise fail(f"must be a whole number, not {value!r}")
    if isinstance(default, tuple):
        if isinstance(value, str):
            items = tuple(item.strip() for item in value.split(",") if item.strip())
            if items:
                return items
        elif isinstance(value, list | tuple) and value and all(isinstance(v, str | int) for v in value):
            return tuple(str(v) for v in value)
        raise fail(f"must be a non-empty list (or a comma-separated text), not {value!r}")
    if isinstance(default, str):
        if isinstance(value, str | int):
            return str(value)
        raise fail(f"must be a text, not {value!r}")
    return coerce_parameter(value, fail)


def _kind_of(default: ParameterValue | None) -> str:
    if isinstance(default, int):
        return "a whole number"
    if isinstance(default, tuple):
        return "a list"
    return "a number, a text or a list"
