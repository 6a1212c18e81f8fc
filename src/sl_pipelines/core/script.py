"""Renders a :class:`~sl_pipelines.core.job.Job` to the bash batch script that ``sbatch`` runs.

Everything the shell reads is quoted with :func:`shlex.quote`, so a session named ``a b;rm -rf ~`` is
only a name. ``#SBATCH`` lines are read by sbatch, not by the shell: their values are validated
(no line breaks, nothing sbatch would treat as a comment or a job separator), put in double quotes,
and ``%`` is doubled so that sbatch's file-name patterns (``%j``, ``%x``) do not rewrite a path.
The script never touches shell start-up files: conda is activated through its shell hook, not
``conda init``.
"""

from __future__ import annotations

import re
import shlex

from sl_pipelines.core.job import Environment, EnvironmentKind, Job, Resources
from sl_pipelines.errors import ConfigurationError

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# sbatch treats any #SBATCH line containing these words as a heterogeneous-job separator.
_HETJOB = re.compile(r"hetjob|packjob", re.IGNORECASE)
_SIMPLE = re.compile(r"^[A-Za-z0-9_.,:=+\-]+$")
_ARRAY = re.compile(r"^[0-9,\-:%]+$")
_DEPENDENCY = re.compile(r"^[A-Za-z0-9_:,?+]+$")
_EXPORT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def render_script(job: Job) -> str:
    """Returns the bash batch script of ``job``.

    Args:
        job: the job to render.

    Returns:
        The script text, ending in a newline.

    Raises:
        ConfigurationError: a value cannot be put safely into an ``#SBATCH`` line, a resource is out
            of range, or an export name is not a shell variable name.
    """
    if not job.commands:
        raise ConfigurationError(f"Job {job.name!r} has no commands; give it at least one command to run.")
    # The cd makes a job fail when its folder is missing (Slurm would silently run it in /tmp).
    cd = f"cd -- {shlex.quote(str(job.working_directory))}"
    lines = ["#!/bin/bash", *_directives(job), "", "set -euo pipefail", cd, ""]
    lines.extend(_activation(job.environment))
    lines.extend(_exports(job))
    lines.extend(_command_line(job, command) for command in job.commands)
    return "\n".join(lines) + "\n"


def is_slurm_word(value: str) -> bool:
    """True when ``value`` can stand as it is in ``#SBATCH --partition/--account/--qos/--gres``."""
    return bool(_SIMPLE.match(value))


def format_time_limit(minutes: int) -> str:
    """Formats a time limit in minutes as Slurm's ``D-HH:MM:SS``."""
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    return f"{days}-{hours:02d}:{mins:02d}:00"


def _directives(job: Job) -> list[str]:
    resources = job.resources
    _check_resources(job.name, resources)
    name = _quoted_value("job name", job.name, job.name)
    chdir = _quoted_value("working directory", str(job.working_directory), job.name)
    stdout = _quoted_path("stdout path", str(job.stdout_path), job.name)
    stderr = _quoted_path("stderr path", str(job.stderr_path), job.name)
    if job.task_logs:  # %a: each array task logs into the folder named after its index
        stdout = stdout.removesuffix('/stdout.txt"') + '/%a/stdout.txt"'
        stderr = stderr.removesuffix('/stderr.txt"') + '/%a/stderr.txt"'
    pairs: list[tuple[str, str]] = [
        ("job-name", name),
        ("chdir", chdir),
        ("output", stdout),
        ("error", stderr),
        ("cpus-per-task", str(resources.cpus)),
        ("mem", f"{resources.memory_mb}M"),
        ("time", format_time_limit(resources.time_limit_minutes)),
    ]
    optional = {
        "partition": (resources.partition, _SIMPLE),
        "account": (resources.account, _SIMPLE),
        "qos": (resources.qos, _SIMPLE),
        "gres": (resources.gres, _SIMPLE),
        "array": (job.array, _ARRAY),
        "dependency": (job.dependency, _DEPENDENCY),
    }
    for option, (value, pattern) in optional.items():
        if value is not None:
            pairs.append((option, _checked_token(option, value, pattern, job.name)))
    if job.dependency is not None:  # a dependency that can never be met cancels the job, never strands it
        pairs.append(("kill-on-invalid-dep", "yes"))
    return [f"#SBATCH --{option}={value}" for option, value in pairs]


def _check_resources(name: str, resources: Resources) -> None:
    for label, value in (
        ("cpus", resources.cpus),
        ("memory_mb", resources.memory_mb),
        ("time_limit_minutes", resources.time_limit_minutes),
    ):
        if value < 1:
            raise ConfigurationError(
                f"Job {name!r} asks for {label}={value}; use a positive whole number.", key=label
            )


def _checked_token(option: str, value: str, pattern: re.Pattern[str], job_name: str) -> str:
    if not pattern.match(value):
        raise ConfigurationError(
            f"Job {job_name!r} has --{option}={value!r}, which is not a valid Slurm {option} value; "
            "use letters, digits and Slurm's separators only.",
            key=option,
        )
    return value


def _quoted_value(label: str, value: str, job_name: str) -> str:
    """Double-quotes a free-text value for an #SBATCH line, as sbatch's own parser unquotes it."""
    if not value:
        raise ConfigurationError(f"Job {job_name!r} has an empty {label}; give it a value.", key=label)
    if _CONTROL.search(value):
        raise ConfigurationError(
            f"The {label} {value!r} of job {job_name!r} contains a line break or control character, "
            "which cannot go into an #SBATCH line; remove it.",
            key=label,
        )
    if _HETJOB.search(value):
        raise ConfigurationError(
            f"The {label} {value!r} of job {job_name!r} contains 'hetjob' or 'packjob', which sbatch "
            "reads as a job separator; choose another name.",
            key=label,
        )
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _quoted_path(label: str, value: str, job_name: str) -> str:
    """Like :func:`_quoted_value` for --output/--error, where sbatch expands %j, %x ... (not --chdir)."""
    return _quoted_value(label, value.replace("%", "%%"), job_name)


def _activation(environment: Environment) -> list[str]:
    """Lines that activate the environment; activation scripts may read unset variables, hence +u."""
    body: list[str] = []
    if environment.modules:
        body.append(shlex.join(("module", "load", *environment.modules)))
    if environment.kind is EnvironmentKind.VENV:
        body.append(f"source {shlex.quote(environment.value.rstrip('/') + '/bin/activate')}")
    elif environment.kind is EnvironmentKind.CONDA:
        body.append('eval "$(conda shell.bash hook)"')
        body.append(shlex.join(("conda", "activate", environment.value)))
    if environment.kind in (EnvironmentKind.VENV, EnvironmentKind.CONDA) and not environment.value:
        raise ConfigurationError(
            f"A {environment.kind.value} environment needs a value (the venv folder or conda env name).",
            key="environment",
        )
    if not body:
        return []
    return ["set +u", *body, "set -u", ""]


def activation_prefix(environment: Environment) -> str:
    """A one-line shell prefix that activates ``environment`` for the command after it (``... && ``).

    Used to run server-side commands (``sl-tracker``) in the profile's environment over SSH.
    """
    steps: list[str] = []
    if environment.modules:
        steps.append(shlex.join(("module", "load", *environment.modules)))
    if environment.kind is EnvironmentKind.VENV:
        steps.append(f". {shlex.quote(environment.value.rstrip('/') + '/bin/activate')}")
    elif environment.kind is EnvironmentKind.CONDA:
        steps.append('eval "$(conda shell.posix hook)"')
        steps.append(shlex.join(("conda", "activate", environment.value)))
    return "".join(f"{step} && " for step in steps)


def _exports(job: Job) -> list[str]:
    lines = []
    for name, value in job.exports:
        if not _EXPORT_NAME.match(name):
            raise ConfigurationError(
                f"Job {job.name!r} exports {name!r}, which is not a shell variable name; "
                "use letters, digits and underscores.",
                key="exports",
            )
        lines.append(f"export {name}={shlex.quote(value)}")
    if lines:
        lines.append("")
    return lines


def _command_line(job: Job, command: tuple[str, ...]) -> str:
    if not command:
        raise ConfigurationError(f"Job {job.name!r} has an empty command; remove it or give it a program.")
    return shlex.join(command)
