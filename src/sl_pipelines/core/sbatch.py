"""Pure ``sbatch`` command builder and output parsers: no I/O, unit-tested with tables.

A batch of jobs is submitted with ONE shell command that runs ``sbatch --parsable`` for each script in
turn and stops at the first refusal. Each submission is framed by marker lines (see
:mod:`sl_pipelines.core.slurm`) carrying sbatch's exit status, so the output says which jobs got an id,
which one was refused and which were never tried.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from sl_pipelines.core.slurm import MARKER, split_sections
from sl_pipelines.errors import SubmissionError

_SBATCH_PARSABLE = re.compile(r"^(\d+(?:_\d+)?)(?:;\S+)?$")
_SBATCH_SENTENCE = re.compile(r"Submitted batch job (\d+)")


def build_submit_command(script_paths: Sequence[PurePosixPath]) -> str:
    """Returns ONE shell command that submits each script in turn and stops at the first refusal."""
    define = (
        f'_slp_submit() {{ echo "{MARKER} begin job $1"; sbatch --parsable "$2" 2>&1; _slp_rc=$?; '
        f'echo "{MARKER} end $_slp_rc"; return $_slp_rc; }}'
    )
    calls = " && ".join(f"_slp_submit {i} {shlex.quote(str(path))}" for i, path in enumerate(script_paths))
    return f"{define}; {calls}" if calls else "true"


def parse_sbatch_output(text: str, job_name: str) -> str:
    """Returns the job id printed by ``sbatch --parsable`` (or by plain ``sbatch``).

    Tolerates a ``;cluster`` suffix, site banners and warnings around the id.

    Raises:
        SubmissionError: no job id could be found in the output.
    """
    for line in reversed(text.strip().splitlines()):
        match = _SBATCH_PARSABLE.match(line.strip())
        if match:
            return match.group(1)
    sentence = _SBATCH_SENTENCE.search(text)
    if sentence:
        return sentence.group(1)
    summary = " ".join(text.split()) or "no output"
    raise SubmissionError(
        f"sbatch did not return a job id for job {job_name!r} (it said: {summary}); check the job's "
        "resources and the partition, then submit again.",
        job_name=job_name,
        output=text,
    )


@dataclass(frozen=True)
class SubmitOutcome:
    """What one ``sbatch`` of a batch submission did.

    Attributes:
        index: the job's position in the batch.
        job_id: the job id, or None when sbatch refused or was never run.
        output: sbatch's output (stdout and stderr).
        attempted: False when an earlier refusal stopped the batch before this job.
    """

    index: int
    job_id: str | None
    output: str
    attempted: bool


def parse_submit_output(text: str, job_names: Sequence[str]) -> tuple[SubmitOutcome, ...]:
    """Parses the output of :func:`build_submit_command`: one outcome per job, in order."""
    sections = {section.name: section for section in split_sections(text)}
    outcomes = []
    for index, name in enumerate(job_names):
        section = sections.get(f"job {index}")
        if section is None:
            outcomes.append(SubmitOutcome(index, None, "", attempted=False))
            continue
        output = "\n".join(section.lines)
        job_id: str | None = None
        if section.ok:
            try:
                job_id = parse_sbatch_output(output, name)
            except SubmissionError:
                job_id = None
        outcomes.append(SubmitOutcome(index, job_id, output, attempted=True))
    return tuple(outcomes)
