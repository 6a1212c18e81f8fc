"""One Slurm batch job: resources, environment activation and commands, rendered to a bash script."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from pathlib import PurePosixPath

Command = tuple[str, ...]
"""One command as an argument vector; every element is shell-quoted when the script is rendered."""


class EnvironmentKind(StrEnum):
    """How a job activates its software environment."""

    NONE = "none"
    VENV = "venv"
    CONDA = "conda"
    MODULES = "modules"


@dataclass(frozen=True)
class Environment:
    """The environment a job activates before its commands, without touching shell start-up files.

    Attributes:
        kind: none, a Python venv (``value`` = its folder), a conda env (``value`` = its name or prefix)
            or environment modules (``modules`` = names to ``module load``).
        value: the venv folder or conda environment.
        modules: modules to load (kind MODULES, or extra modules before a venv/conda activation).
    """

    kind: EnvironmentKind = EnvironmentKind.NONE
    value: str = ""
    modules: tuple[str, ...] = ()


@dataclass(frozen=True)
class Resources:
    """What a job asks Slurm for."""

    cpus: int = 1
    memory_mb: int = 1024
    time_limit_minutes: int = 60
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gres: str | None = None


@dataclass(frozen=True)
class JobDefaults:
    """Slurm options a server profile gives every job whose pipeline definition leaves them unset.

    A definition's own value (per job, or in its ``defaults``) always wins: the profile says where this
    user's jobs go on this cluster, a pipeline says what one job needs.
    """

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gres: str | None = None

    def fill(self, resources: Resources) -> Resources:
        """``resources`` with each option it leaves unset taken from these defaults."""
        unset = {
            item.name: getattr(self, item.name)
            for item in fields(self)
            if getattr(resources, item.name) is None and getattr(self, item.name) is not None
        }
        return replace(resources, **unset) if unset else resources

    def items(self) -> tuple[tuple[str, str], ...]:
        """The options that are set, as (name, value) pairs in a fixed order."""
        return tuple(
            (item.name, value) for item in fields(self) if (value := getattr(self, item.name)) is not None
        )


@dataclass(frozen=True)
class Job:
    """One Slurm batch job.

    Attributes:
        name: the Slurm job name; carries the pipeline's run token so that a job can be found by name.
        working_directory: the job's remote folder: its script and logs live there.
        commands: the commands to run, in order, each an argument vector.
        resources: cpus, memory, time limit and the optional partition/account/qos/gres.
        environment: what to activate before the commands.
        array: an optional ``--array`` specification.
        dependency: an optional ``--dependency`` specification.
        exports: environment variables set in the script before the commands.
        task_logs: an array job whose tasks log to ``<working_directory>/<task index>/stdout.txt`` and
            ``stderr.txt`` (links there lead to each task's own job folder).
    """

    name: str
    working_directory: PurePosixPath
    commands: tuple[Command, ...]
    resources: Resources = field(default_factory=Resources)
    environment: Environment = field(default_factory=Environment)
    array: str | None = None
    dependency: str | None = None
    exports: tuple[tuple[str, str], ...] = ()
    task_logs: bool = False

    @property
    def script_path(self) -> PurePosixPath:
        """Where the rendered script is written on the server."""
        return self.working_directory / f"{self.name}.sh"

    @property
    def stdout_path(self) -> PurePosixPath:
        """The job's stdout log."""
        return self.working_directory / "stdout.txt"

    @property
    def stderr_path(self) -> PurePosixPath:
        """The job's stderr log."""
        return self.working_directory / "stderr.txt"

    def render(self) -> str:
        """Returns the bash batch script of this job (see ``render_script``)."""
        from sl_pipelines.core.script import render_script  # noqa: PLC0415 - keeps the data class import-light

        return render_script(self)
