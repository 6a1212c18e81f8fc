"""Gathering a run report: the run's record, Slurm's states and the failed jobs' stderr tails.

The page itself is drawn by :func:`sl_pipelines.core.report_html.render_report` (pure). A manager writes
each run's report next to its journal when the run ends (``<runs>/<token>.html``); ``sl-process report``
makes one for any recorded run. Writing the report never fails a run: a problem is logged.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from sl_pipelines.core.layout import JOB_FOLDERS
from sl_pipelines.core.report_html import render_report
from sl_pipelines.core.report_model import view_run
from sl_pipelines.core.resolve import split_job_name
from sl_pipelines.core.seams import Backend
from sl_pipelines.core.states import JobState
from sl_pipelines.errors import SlPipelinesError
from sl_pipelines.orchestration.cycle import STDERR_TAIL_BYTES
from sl_pipelines.orchestration.journal import RunJournal, runs_dir
from sl_pipelines.orchestration.run import PipelineRun
from sl_pipelines.vocabulary import ProcessingStatus

logger = logging.getLogger("sl_pipelines")

TAIL_LINES = 20
MAX_TAILS = 20
"""At most this many failed jobs' stderr are read for one report (one file read each)."""


def report_path(token: str) -> Path:
    """Where a run's report is written at its end: next to its journal."""
    return runs_dir() / f"{token}.html"


def build_report(
    backend: Backend,
    record: RunJournal,
    states: Mapping[str, JobState],
    known_tails: Mapping[str, str] | None = None,
    failed_job: str = "",
) -> str:
    """The report page of a run: its record, Slurm's states (by job id) and its failed jobs' stderr tails.

    The stderr of every failed job (not a cancelled one) whose tail is not in ``known_tails`` is read from
    its job folder on the backend; a tail that cannot be read is logged and left out.
    """
    data = json.loads(record.to_json())
    by_id = {job_id: state.value for job_id, state in states.items()}
    tails = dict(known_tails or {})
    failed = {a.name: a.attempt for a in view_run(data, by_id, failed_job).attempts if a.outcome == "failed"}
    for name, attempt in [(n, a) for n, a in failed.items() if n not in tails][:MAX_TAILS]:
        tail = _stderr_tail(backend, record.token, name, attempt)
        if tail:
            tails[name] = tail
    now = datetime.now(tz=UTC).isoformat(timespec="seconds")
    return render_report(data, states=by_id, stderr_tails=tails, generated_at=now, failed_job=failed_job)


def _stderr_tail(backend: Backend, token: str, name: str, attempt: int) -> str:
    """The tail of a job's last failed attempt's stderr (a retried attempt logs in ``attempt-<N>/``)."""
    _, key = split_job_name(name, token)
    folder = PurePosixPath(backend.working_root) / JOB_FOLDERS / token / key
    path = (folder / f"attempt-{attempt}" if attempt > 1 else folder) / "stderr.txt"
    try:
        text = backend.read_text(path, tail_bytes=STDERR_TAIL_BYTES) or ""
    except SlPipelinesError as exc:
        logger.warning("Could not read %s for the run report: %s", path, exc)
        return ""
    return "\n".join(text.splitlines()[-TAIL_LINES:])


def write_report(path: Path, page: str) -> Path:
    """Writes a report atomically (a reader never sees half a page); returns its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(page)
        os.chmod(temp, 0o644)  # mkstemp makes it 0600; a report is for people to open
        Path(temp).replace(path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def write_run_reports(backend: Backend, runs: Sequence[PipelineRun]) -> None:
    """Writes the report of each run that has just ended next to its journal; never raises (logs)."""
    for run in runs:
        try:
            path = write_report(report_path(run.journal.token), _end_report(backend, run))
        except (OSError, SlPipelinesError, ValueError, TypeError, KeyError) as exc:
            logger.warning("%s: could not write its run report: %s", run.describe(), exc)
        else:
            logger.info("%s: run report %s", run.describe(), path)


def _end_report(backend: Backend, run: PipelineRun) -> str:
    """A run's report from what its manager knows at the end (the failure's stderr tail included).

    A job still queued or running when a run fails or is aborted was cancelled by its manager then.
    """
    ended = run.status is not ProcessingStatus.SUCCEEDED
    states = {
        s.job_id: JobState.CANCELLED if ended and s.state.is_active else s.state
        for s in run.job_states.values()
    }
    known, job = {}, run.failure.job if run.failure is not None else None
    retried = job is not None and len(run.journal.attempts.get(job) or ()) > 1
    if run.failure is not None and job and run.failure.stderr_tail and not retried:
        known[job] = run.failure.stderr_tail  # a retried job's last attempt logs in its own folder: read it
    return build_report(backend, run.journal, states, known, failed_job=job or "")
