"""One polling cycle over many pipelines: one probe, then only the actions the decisions call for.

Everything the cycle needs to know (the state of every watched job, by name, and every tracker) comes
from ONE ``Backend.probe`` call, whatever the number of pipelines. Submissions decided in the same
cycle go out as one ``submit_jobs`` call. Before a stage is submitted its intent is journaled, and the
stage's job names were part of the probe, so a job that already exists is adopted, never resubmitted.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence

from sl_pipelines.core.decisions import Action, Decision, latest_by_name
from sl_pipelines.core.job import Job
from sl_pipelines.core.seams import Backend, ProbeRequest
from sl_pipelines.errors import BatchSubmissionError, SlPipelinesError, SubmissionError
from sl_pipelines.orchestration.pipeline import STDERR_TAIL_BYTES, FailureReport, ProcessingPipeline
from sl_pipelines.vocabulary import ProcessingStatus

logger = logging.getLogger("sl_pipelines")

MANAGER_JOB = "manager"
"""The job identity under which the manager records a failure no job could record itself."""


def merge_requests(pipelines: Sequence[ProcessingPipeline]) -> ProbeRequest:
    """One probe request covering every pipeline's jobs and trackers."""
    names: dict[str, None] = {}
    trackers: dict[object, None] = {}
    for pipeline in pipelines:
        request = pipeline.probe_request()
        names.update(dict.fromkeys(request.job_names))
        trackers.update(dict.fromkeys(request.tracker_paths))
    return ProbeRequest(job_names=tuple(names), tracker_paths=tuple(trackers))  # type: ignore[arg-type]


def run_cycle(backend: Backend, pipelines: Sequence[ProcessingPipeline]) -> None:
    """Advances every running pipeline by one cycle."""
    active = [p for p in pipelines if p.is_running]
    if not active:
        return
    result = backend.probe(merge_requests(active))
    jobs = latest_by_name(result.jobs)
    now = time.monotonic()
    submissions: list[tuple[ProcessingPipeline, Decision]] = []
    for pipeline in active:
        outcome = pipeline.decide(result, jobs, now)
        if isinstance(outcome, FailureReport):
            _finish(pipeline, ProcessingStatus.FAILED, outcome)
        elif outcome.action is Action.SUBMIT:
            submissions.append((pipeline, outcome))
        elif outcome.action is not Action.WAIT:
            _conclude(backend, pipeline, outcome)
    if submissions:
        _submit(backend, submissions)


def _submit(backend: Backend, submissions: list[tuple[ProcessingPipeline, Decision]]) -> None:
    new_runs = [p for p, d in submissions if d.stage == 1 and p.stage == 0]
    refused = _claim(backend, new_runs) if new_runs else set()
    batch: list[tuple[ProcessingPipeline, Job]] = []
    for pipeline, decision in submissions:
        if id(pipeline) in refused:
            continue
        ids = dict(pipeline.journal.job_ids)
        ids.update(decision.adopted or {})
        if decision.adopted:
            logger.info(
                "%s: adopting already submitted jobs %s", pipeline.describe(), sorted(decision.adopted)
            )
        pipeline.journal = pipeline.journal.save(stage=decision.stage, job_ids=ids)
        pipeline.stage = decision.stage
        pipeline.missing_since.clear()
        batch.extend((pipeline, pipeline.resolved_job(name).job) for name in decision.to_submit)
    if not batch:
        return
    try:
        job_ids = backend.submit_jobs([job for _, job in batch])
    except SubmissionError as exc:
        _refused(backend, batch, exc)
        return
    except SlPipelinesError as exc:
        # The outcome is unknown (the link dropped during sbatch): nothing is retried blindly; the next
        # cycle finds what was submitted by job name and submits only what Slurm never saw.
        logger.warning("Submission interrupted (%s); the next cycle reconciles the jobs by name.", exc)
        return
    _record_ids(batch, dict(zip((job.name for _, job in batch), job_ids, strict=True)))


def _record_ids(batch: list[tuple[ProcessingPipeline, Job]], ids: dict[str, str]) -> None:
    """Journals the job ids of a submission: one journal write per pipeline."""
    updates: dict[int, tuple[ProcessingPipeline, dict[str, str]]] = {}
    for pipeline, job in batch:
        if job.name in ids:
            updates.setdefault(id(pipeline), (pipeline, dict(pipeline.journal.job_ids)))[1][job.name] = ids[
                job.name
            ]
    for pipeline, known in updates.values():
        pipeline.journal = pipeline.journal.save(job_ids=known)


def _refused(backend: Backend, batch: list[tuple[ProcessingPipeline, Job]], exc: SubmissionError) -> None:
    """Slurm refused a job: its pipeline fails (its other jobs are cancelled); the others go on."""
    submitted = exc.submitted if isinstance(exc, BatchSubmissionError) else {}
    _record_ids(batch, submitted)
    owner = next((p for p, job in batch if job.name == exc.job_name), None)
    for pipeline in [owner] if owner is not None else list({id(p): p for p, _ in batch}.values()):
        ids = [submitted[job.name] for p, job in batch if p is pipeline and job.name in submitted]
        if ids:
            backend.cancel(ids)
        report = FailureReport(f"Slurm refused job {exc.job_name}: {exc}", job=exc.job_name)
        _record_failure(backend, pipeline, Decision(Action.FAIL, pipeline.stage, reason=report.reason))
        _finish(pipeline, ProcessingStatus.FAILED, report)


def _claim(backend: Backend, pipelines: list[ProcessingPipeline]) -> set[int]:
    """Locks each new run's tracker to its manager before anything is submitted, in ONE remote command.

    Returns the ids of the pipelines whose tracker was refused (they are marked FAILED).
    """
    arguments = ["claim"]
    for p in pipelines:
        arguments += ["--tracker", str(p.remote_tracker_path), str(p.manager_id), str(p.resolved.job_count)]
    result = backend.run_tracker(arguments)
    try:
        entries = json.loads(result.stdout)
        errors = [None if entry["ok"] else str(entry["error"]) for entry in entries]
        if len(errors) != len(pipelines):
            raise ValueError("one result per tracker expected")
    except (ValueError, TypeError, KeyError):
        output = result.stderr.strip() or result.stdout.strip() or f"sl-tracker exited {result.exit_code}"
        errors = [output.splitlines()[-1]] * len(pipelines)
    refused = set()
    for pipeline, error in zip(pipelines, errors, strict=True):
        if error is not None:
            _finish(pipeline, ProcessingStatus.FAILED, FailureReport(f"Could not claim the tracker: {error}"))
            refused.add(id(pipeline))
    return refused


def _conclude(backend: Backend, pipeline: ProcessingPipeline, decision: Decision) -> None:
    if decision.to_cancel:
        backend.cancel(decision.to_cancel)
    if decision.action is Action.SUCCEED:
        if not pipeline.keep_job_logs:
            backend.remove(pipeline.resolved.jobs_folder)
        _finish(pipeline, ProcessingStatus.SUCCEEDED, None)
        return
    report = FailureReport(decision.reason, job=decision.failed_job)
    if decision.failed_job is not None:
        job = pipeline.resolved_job(decision.failed_job).job
        tail = backend.read_text(job.stderr_path, tail_bytes=STDERR_TAIL_BYTES) or ""
        report = FailureReport(decision.reason, decision.failed_job, job.stderr_path, _last_lines(tail, 20))
    if decision.action is Action.FAIL and not decision.tracker_has_failure and pipeline.stage > 0:
        _record_failure(backend, pipeline, decision)
    status = ProcessingStatus.FAILED if decision.action is Action.FAIL else ProcessingStatus.ABORTED
    _finish(pipeline, status, report)


def _record_failure(backend: Backend, pipeline: ProcessingPipeline, decision: Decision) -> None:
    """Writes the failure into the tracker, so that it does not stay 'running' after a silent death."""
    arguments = ["error", str(pipeline.remote_tracker_path), "--manager-id", str(pipeline.manager_id)]
    arguments += ["--job", decision.failed_job or MANAGER_JOB, "--reason", decision.reason[:300]]
    result = backend.run_tracker(arguments)
    if not result.ok:
        logger.warning(
            "Could not record the failure in %s: %s", pipeline.remote_tracker_path, result.stderr.strip()
        )


def _finish(pipeline: ProcessingPipeline, status: ProcessingStatus, report: FailureReport | None) -> None:
    pipeline.status = status
    pipeline.failure = report
    pipeline.journal = pipeline.journal.save(status=status.name, reason=report.reason if report else "")
    log = logger.info if status is ProcessingStatus.SUCCEEDED else logger.warning
    log("%s", pipeline.describe())


def _last_lines(text: str, count: int) -> str:
    lines = text.splitlines()
    return "\n".join(lines[-count:])


def cancel_pipeline(backend: Backend, pipeline: ProcessingPipeline, reason: str) -> None:
    """Cancels a running pipeline's jobs and records the failure in its tracker (used on Ctrl-C)."""
    if not pipeline.is_running:
        return
    ids = [
        job_id
        for name, job_id in pipeline.journal.job_ids.items()
        if name not in pipeline.job_states or pipeline.job_states[name].state.is_active
    ]
    if ids:
        backend.cancel(ids)
    if pipeline.stage > 0:
        _record_failure(backend, pipeline, Decision(Action.FAIL, pipeline.stage, reason=reason))
    _finish(pipeline, ProcessingStatus.FAILED, FailureReport(reason))
