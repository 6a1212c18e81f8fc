"""Submissions: a stage's jobs as Slurm job arrays where they can be, single jobs where not (pure).

A stage's jobs that ask for the same resources go out as ONE array job, whose task index is each job's
position in its stage. Every task runs its job's own script, writes its own stdout and stderr into its
own job folder (the array's ``%a`` log paths lead there through links), and reports into the tracker
under its own job name. A task's Slurm id is ``<array id>_<position>``.

Because the index is the job's position in the stage, an array task whose id was never journaled (the
submission's answer was lost) is found again by the stage's array name and its position, however the
stage was split into arrays. Positions at or above the cluster's ``MaxArraySize`` go out as single jobs.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import PurePosixPath

from sl_pipelines.core.job import Environment, Job, Resources

ARRAY_FOLDER = ".arrays"
"""Under a run's job folder: one folder per array, holding the links ``<task index>`` → job folder."""


@dataclass(frozen=True)
class Submission:
    """One sbatch call: a single job, or an array whose tasks are jobs of one stage.

    Attributes:
        job: what sbatch is given (the job itself, or the array's dispatching job).
        tasks: for an array, (task index, job) of each task in index order; empty for a single job.
    """

    job: Job
    tasks: tuple[tuple[int, Job], ...] = ()

    @property
    def is_array(self) -> bool:
        """True for an array job."""
        return bool(self.tasks)

    @property
    def jobs(self) -> tuple[Job, ...]:
        """The jobs this submission runs."""
        return tuple(job for _, job in self.tasks) if self.tasks else (self.job,)

    def job_ids(self, sbatch_id: str) -> dict[str, str]:
        """Each job's Slurm id, given the id sbatch returned: ``<id>_<index>`` for array tasks."""
        if not self.tasks:
            return {self.job.name: sbatch_id}
        return {job.name: f"{sbatch_id}_{index}" for index, job in self.tasks}

    def files(self) -> tuple[tuple[PurePosixPath, str], ...]:
        """(path, text) of every script to write before sbatch: each task's own, then the array's."""
        tasks = tuple((job.script_path, job.render()) for _, job in self.tasks)
        return (*tasks, (self.job.script_path, self.job.render()))

    def links(self) -> tuple[tuple[PurePosixPath, str], ...]:
        """(link path, relative target) leading each task's log folder to its job folder."""
        return tuple(
            (self.job.working_directory / str(index), f"../../{job.working_directory.name}")
            for index, job in self.tasks
        )


def array_name(token_prefix: str, stage: int) -> str:
    """The Slurm name of a stage's arrays: ``slp-<token>-<stage>`` (its jobs are ``...-<stage>-<key>``)."""
    return f"{token_prefix}-{stage}"


def plan_stage(
    jobs: Sequence[tuple[int, Job]], *, name: str, folder: PurePosixPath, max_array_size: int
) -> tuple[Submission, ...]:
    """Groups a stage's jobs into submissions.

    Args:
        jobs: (position in the stage, job) of the jobs to submit.
        name: the stage's array name (:func:`array_name`).
        folder: the run's job folder (array scripts and their log links go under it).
        max_array_size: the cluster's ``MaxArraySize``: task indexes must stay below it.
    """
    groups: dict[Resources, list[tuple[int, Job]]] = {}
    singles: list[Submission] = []
    for position, job in jobs:
        if position < max_array_size and not job.array and not job.task_logs:
            groups.setdefault(job.resources, []).append((position, job))
        else:
            singles.append(Submission(job))
    plan: list[Submission] = []
    for number, members in enumerate(groups.values()):
        if len(members) == 1:
            plan.append(Submission(members[0][1]))
            continue
        array = _array_job(members, name, folder / ARRAY_FOLDER / f"{name}-{number}")
        plan.append(Submission(array, tuple(members)))
    return (*plan, *singles)


def _array_job(members: Sequence[tuple[int, Job]], name: str, folder: PurePosixPath) -> Job:
    """The array's own job: Slurm gives it the resources; each task runs its job's script."""
    first = members[0][1]
    branches = " ".join(
        f"{index}) exec bash {shlex.quote(str(job.script_path))} ;;" for index, job in members
    )
    dispatch = (
        f'case "${{SLURM_ARRAY_TASK_ID:-}}" in {branches} '
        '*) echo "no task ${SLURM_ARRAY_TASK_ID:-} in this array" >&2; exit 2 ;; esac'
    )
    return replace(
        first,
        name=name,
        working_directory=folder,
        commands=(("bash", "-c", dispatch, "sl-array"),),
        environment=Environment(),  # each task's own script activates its environment
        array=",".join(str(index) for index, _ in members),
        exports=(),
        task_logs=True,
    )
