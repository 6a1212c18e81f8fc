"""What carries a detached run on the cluster with nobody watching: each later job's gate, and the final
settling job (server side; run by ``sl-tracker gate`` and ``sl-tracker settle`` inside the jobs).

* The **gate** runs first in every job after stage 1: it lets the job work only when every job of the
  previous stage reported its completion and no failure is recorded; otherwise it records why (when no
  failure is recorded yet) and the job exits 1 without working, so Slurm cancels the stages after it.
* The **settling job** runs after the last stage, however it ended (``afterany``): it reads every job's
  final state from Slurm and the tracker, decides as a manager would (:mod:`sl_pipelines.core.settle`),
  records a failure the tracker does not hold yet, removes the job folders on success (unless the run
  keeps its logs), and writes the outcome into the run's record.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from sl_pipelines.adapters.run_listing import bash_probe
from sl_pipelines.adapters.tracker_ops import MANAGER_JOB
from sl_pipelines.adapters.tracker_store import ProcessingTracker
from sl_pipelines.core.seams import ProbeRequest
from sl_pipelines.core.settle import Verdict, settle
from sl_pipelines.core.slurm import AccountingMode
from sl_pipelines.core.states import JobStatus
from sl_pipelines.core.tracker_state import TrackerState
from sl_pipelines.core.usage import USAGE_FILE_PREFIX, USAGE_FOLDER, JobFacts, Measured, usage_record
from sl_pipelines.errors import SlPipelinesError, TrackerError
from sl_pipelines.vocabulary import ProcessingStatus

_LOG = logging.getLogger("sl_pipelines")
_STAGE = re.compile(r"-(\d+)-[^-]")
KEEP = ("run.json",)


def gate(tracker_path: Path, manager_id: int, job: str, after: Sequence[str]) -> str | None:
    """Checks that the previous stage completed; returns None to let the job work, else why not.

    When the previous stage did not complete and no failure is recorded yet, records it (this job is
    where the run stops, and the tracker says which earlier job never reported).
    """
    tracker = ProcessingTracker(tracker_path)
    state = tracker.read()
    if state.manager_id != manager_id:
        return (
            f"Tracker {tracker_path} no longer belongs to this run (manager {state.manager_id}); not working."
        )
    if state.failure is not None:
        return f"An earlier job failed ({state.failure.job}: {state.failure.reason}); not working."
    missing = [name for name in after if name not in state.completed_jobs]
    if not missing:
        return None
    reason = f"The stage before job {job} did not complete: job {missing[0]} never reported to the tracker"
    tracker.error(manager_id, job=job, reason=reason)
    return reason


def settle_run(record_path: Path, mode: AccountingMode) -> Verdict:
    """Decides how the run ended, records it in its tracker and its record; returns the verdict."""
    record = json.loads(record_path.read_text(encoding="utf-8"))
    job_ids: dict[str, str] = {str(k): str(v) for k, v in (record.get("job_ids") or {}).items()}
    stages: dict[int, tuple[str, ...]] = {}
    for name in job_ids:
        match = _STAGE.search(name.removeprefix(f"slp-{record['token']}"))
        if match:
            stages[int(match.group(1))] = (*stages.get(int(match.group(1)), ()), name)
    folder = record_path.parent / USAGE_FOLDER  # what each job used, asked in the same probe
    usage = tuple((i, PurePosixPath(folder / f"{USAGE_FILE_PREFIX}{i}.json")) for i in job_ids.values())
    result = bash_probe(mode)(ProbeRequest(job_ids=tuple(job_ids.values()), usage=usage))
    by_id = {status.job_id: status for status in result.jobs}
    jobs = {name: _named(by_id.get(job_id), job_id, name) for name, job_id in job_ids.items()}
    record["usage"] = {**(record.get("usage") or {}), **_usage(record, jobs, result.usage)}
    tracker_path = Path(str(record["tracker"]))
    state, problem = _read(tracker_path)
    verdict = settle(stages, jobs, state, tracker_path=str(tracker_path), tracker_problem=problem)
    if verdict.status is ProcessingStatus.FAILED and verdict.record:
        _record_failure(tracker_path, int(record["manager_id"]), verdict)
    if verdict.status is ProcessingStatus.SUCCEEDED and not record.get("keep_job_logs"):
        _clear(record_path.parent)
    _write_record(record_path, record, verdict)
    return verdict


def _usage(
    record: dict[str, Any], jobs: dict[str, JobStatus], measured: Mapping[str, Measured]
) -> dict[str, dict[str, Any]]:
    """The usage records of the run's jobs (the requests as Slurm or the job itself gives them)."""
    found = {}
    for name, status in jobs.items():
        if status.job_id not in measured:
            continue
        match = _STAGE.search(name.removeprefix(f"slp-{record['token']}"))
        attempts = (record.get("attempts") or {}).get(name) or ()
        attempt = next((int(a.get("attempt", 1)) for a in attempts if a.get("job_id") == status.job_id), 1)
        stage = int(match.group(1)) if match else 0
        facts = JobFacts(name, stage, attempt, status.state.value, cpus=0, memory_mb=0, time_limit_minutes=0)
        found[status.job_id] = usage_record(measured[status.job_id], facts)
    return found


def _named(status: JobStatus | None, job_id: str, name: str) -> JobStatus:
    from sl_pipelines.core.states import JobState  # noqa: PLC0415 - only needed for a missing job

    if status is None:
        return JobStatus(job_id, name, JobState.NOT_FOUND)
    return JobStatus(status.job_id, name, status.state, status.exit_code, status.reason)


def _read(path: Path) -> tuple[TrackerState | None, str]:
    try:
        return ProcessingTracker(path).read(), ""
    except SlPipelinesError as exc:
        return None, str(exc)


def _record_failure(path: Path, manager_id: int, verdict: Verdict) -> None:
    try:
        ProcessingTracker(path).error(
            manager_id, job=verdict.failed_job or MANAGER_JOB, reason=verdict.reason[:300]
        )
    except TrackerError as exc:
        _LOG.warning("Could not record the failure in %s: %s", path, exc)


def _clear(folder: Path) -> None:
    for entry in folder.iterdir():
        if entry.name in KEEP:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=False)
        else:
            entry.unlink(missing_ok=True)


def _write_record(path: Path, record: dict[str, object], verdict: Verdict) -> None:
    record = {**record, "status": verdict.status.name, "reason": verdict.reason}
    record["updated_at"] = datetime.now(tz=UTC).isoformat(timespec="seconds")
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    temp.replace(path)
