"""Detached runs: every stage submitted at once, chained by Slurm dependencies, settled by the cluster.

Stage k's jobs wait for all of stage k-1 (``afterok``, ``kill-on-invalid-dep``) and start with a gate
that checks the tracker (see :mod:`sl_pipelines.workers.detached`); a small settling job after the last
stage (``afterany``) decides how the run ended and writes it into the tracker and the run's record.
Nobody has to watch: the manager submits, writes the record (mode ``detached``), lets the lease go, and
exits. ``sl-process status|attach|cancel`` look at the run from any PC.

Submission is all or nothing per run: if any stage cannot be submitted (refused, or its outcome is
unknown), what was submitted is cancelled and the run fails with the reason, so no half-chained run
is ever left on the cluster.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from sl_pipelines.core.arrays import Submission, plan_stage
from sl_pipelines.core.job import Job, Resources
from sl_pipelines.core.seams import Backend
from sl_pipelines.core.slurm import AccountingMode
from sl_pipelines.errors import ConfigurationError
from sl_pipelines.orchestration.cycle import (
    apply_submission,
    cancel_runs,
    claim_trackers,
    flush_records,
    take_leases,
)
from sl_pipelines.orchestration.run import PipelineRun

logger = logging.getLogger("sl_pipelines")

SETTLE = "settle"
"""The settling job's name in a run's job ids (its Slurm name is ``slp-<token>-settle``)."""


def submit_detached(backend: Backend, runs: Sequence[PipelineRun]) -> None:
    """Submits every stage of each run with dependencies, then its settling job; the runs are then the
    cluster's (their records say ``detached``), or failed with the reason (nothing left running).

    Raises:
        ConfigurationError: the backend cannot carry a run by itself (the local backend).
    """
    mode = getattr(backend, "accounting_mode", None)
    if not isinstance(mode, AccountingMode):
        raise ConfigurationError(
            f"{backend.name} cannot carry a run by itself (no Slurm): run without --detach, and keep the "
            "manager running."
        )
    take_leases(backend, [run for run in runs if not run.lease_held])
    active = [run for run in runs if run.is_running]
    new = [run for run in active if run.stage == 0]
    claimed = claim_trackers(backend, new)
    active = [run for run in active if run.stage > 0 or id(run) in claimed]
    first = {id(run): _first_stage(run) for run in active}
    stages = max((max(run.spec.stages) for run in active), default=0)
    for stage in range(1, stages + 1):
        due = [run for run in active if first[id(run)] <= stage <= max(run.spec.stages)]
        active = _submit_stage(backend, due, stage) + [run for run in active if run not in due]
    _submit_settlers(backend, active, mode)
    for run in active:
        run.hand_to_cluster()
    flush_records(backend, list(runs))


def _submit_stage(backend: Backend, runs: list[PipelineRun], stage: int) -> list[PipelineRun]:
    """Submits one stage of every run, each waiting for the stage before it; returns the runs still on."""
    batch: list[tuple[PipelineRun, Job]] = []
    plan: list[Submission] = []
    for run in runs:
        run.apply(stage=stage, since={})  # the intent is recorded BEFORE sbatch
        after = _base_ids(run, stage - 1)
        jobs = [
            (i, replace(run.job(n), dependency=f"afterok:{after}" if after else None))
            for i, n in enumerate(run.spec.stages[stage])
        ]
        batch.extend((run, job) for _, job in jobs)
        plan.extend(
            plan_stage(
                jobs,
                name=run.stage_array_name,
                folder=run.resolved.jobs_folder,
                max_array_size=backend.max_array_size,
            )
        )
    if not batch:
        return runs
    flush_records(backend, runs)
    report = backend.submit_jobs(plan)
    apply_submission(backend, batch, report)
    incomplete = [
        run for run in runs if run.is_running and not set(run.spec.stages[stage]) <= set(run.state.job_ids)
    ]
    if incomplete:  # a stage that is not wholly on the cluster: nothing of that run may go on alone
        reason = (
            f"Detached submission stopped at stage {stage} (Slurm did not take every job); nothing of the "
            "run is left running: submit it again"
        )
        cancel_runs(backend, incomplete, reason)
    return [run for run in runs if run.is_running]


def _first_stage(run: PipelineRun) -> int:
    """The first stage still to submit: 1 for a new run, the next one for a run converted from attached.

    Raises:
        ConfigurationError: the run's current stage is not wholly on the cluster yet (a job whose
            submission is held back or unknown): it is resumed attached until it is.
    """
    if run.stage == 0:
        return 1
    if not set(run.spec.stages[run.stage]) <= set(run.state.job_ids):
        raise ConfigurationError(
            f"Run {run.resolved.token} has jobs of stage {run.stage} whose submission is not settled yet; "
            "resume it without --detach until that stage runs, then detach it."
        )
    return run.stage + 1


def _base_ids(run: PipelineRun, stage: int) -> str:
    """``123:456``: the Slurm jobs of a stage (an array once, whatever its tasks)."""
    if stage < 1:
        return ""
    ids = {
        run.state.job_ids[name].split("_")[0] for name in run.spec.stages[stage] if name in run.state.job_ids
    }
    return ":".join(sorted(ids, key=int))


def _submit_settlers(backend: Backend, runs: list[PipelineRun], mode: AccountingMode) -> None:
    """One small settling job per run, after its last stage however it ends (``afterany``)."""
    jobs: list[tuple[PipelineRun, Job]] = []
    for run in runs:
        after = _base_ids(run, max(run.spec.stages))
        command = ("sl-tracker", "settle", "--record", str(run.record_path), "--mode", mode.value)
        job = Job(
            name=f"{run.stage_array_name.rsplit('-', 1)[0]}-{SETTLE}",
            working_directory=run.resolved.jobs_folder / SETTLE,
            commands=(command,),
            resources=Resources(cpus=1, memory_mb=256, time_limit_minutes=30),
            environment=run.resolved.all_jobs()[0].job.environment,
            dependency=f"afterany:{after}",
            exports=run.resolved.all_jobs()[0].job.exports,
        )
        jobs.append((run, job))
    if not jobs:
        return
    report = backend.submit_jobs([job for _, job in jobs])
    for run, job in jobs:
        if job.name in report.submitted:
            run.apply(job_ids={**run.state.job_ids, SETTLE: report.submitted[job.name]})
        else:
            why = report.refused.get(job.name) or report.deferred.get(job.name) or "its outcome is unknown"
            cancel_runs(
                backend,
                [run],
                f"The settling job of the detached run was not submitted ({why}); nothing runs, submit again",
            )
