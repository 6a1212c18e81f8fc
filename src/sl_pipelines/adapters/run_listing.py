"""Every run recorded under a working root, as it stands now: what ``sl-process status`` shows.

On a server this runs as ``sl-tracker runs`` (one remote command): it reads each run's record
(``sl_jobs/<token>/run.json``), its lease, its tracker, and asks Slurm for all their jobs at once with the
same probe program a polling cycle uses. The local backend calls it in-process with its own scheduler.
Nothing is written: looking in never changes a run.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from sl_pipelines.core.framing import MARKER
from sl_pipelines.core.layout import JOB_FOLDERS
from sl_pipelines.core.lease import LEASE_NAME
from sl_pipelines.core.probe import build_probe, parse_probe_output
from sl_pipelines.core.seams import ProbeRequest, ProbeResult, RunSnapshot
from sl_pipelines.core.slurm import AccountingMode
from sl_pipelines.core.states import JobState, JobStatus

RECORD_NAME = "run.json"
RESULT_PREFIX = f"{MARKER} runs "


def collect_runs(working_root: Path, probe: Callable[[ProbeRequest], ProbeResult]) -> tuple[RunSnapshot, ...]:
    """Reads every run's record, lease and tracker, and probes all their jobs in ONE probe."""
    folders = sorted((working_root / JOB_FOLDERS).glob(f"*/{RECORD_NAME}"))
    records = [(path.parent, path.read_text(encoding="utf-8", errors="replace")) for path in folders]
    ids: list[str] = []
    trackers: list[PurePosixPath] = []
    for _, text in records:
        data = _json(text)
        ids += [str(job_id) for job_id in (data.get("job_ids") or {}).values()]
        if data.get("tracker"):
            trackers.append(PurePosixPath(str(data["tracker"])))
    result = probe(ProbeRequest(job_ids=tuple(ids), tracker_paths=tuple(trackers)))
    by_id = {status.job_id: status for status in result.jobs}
    return tuple(_snapshot(folder, text, by_id, result) for folder, text in records)


def _snapshot(folder: Path, text: str, by_id: dict[str, JobStatus], result: ProbeResult) -> RunSnapshot:
    data = _json(text)
    lease, age = _lease(folder / LEASE_NAME)
    names = {str(v): str(k) for k, v in (data.get("job_ids") or {}).items()}
    jobs = tuple(
        JobStatus(job_id, name, by_id[job_id].state, by_id[job_id].exit_code, by_id[job_id].reason)
        if job_id in by_id
        else JobStatus(job_id, name, JobState.UNKNOWN)
        for job_id, name in names.items()
    )
    tracker = result.trackers.get(PurePosixPath(str(data["tracker"]))) if data.get("tracker") else None
    return RunSnapshot(text, lease, age, tracker, jobs, result.slurm_problems)


def _lease(path: Path) -> tuple[str, float | None]:
    try:
        return path.read_text(encoding="utf-8"), time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return "", None


def _json(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def bash_probe(mode: AccountingMode) -> Callable[[ProbeRequest], ProbeResult]:
    """A probe run here, on the server, with the same program a polling cycle sends."""

    def probe(request: ProbeRequest) -> ProbeResult:
        command, data = build_probe(request, mode)
        done = subprocess.run(command, shell=True, input=data, capture_output=True, check=False)  # noqa: S602
        return parse_probe_output(done.stdout.decode("utf-8", errors="replace"), request)

    return probe


def encode_snapshots(snapshots: Sequence[RunSnapshot]) -> str:
    """The framed answer line of ``sl-tracker runs``."""
    payload = [
        {
            "record": s.record,
            "lease": s.lease,
            "lease_age": s.lease_age,
            "tracker": s.tracker,
            "jobs": [[j.job_id, j.name, j.state.value, j.exit_code, j.reason] for j in s.jobs],
            "slurm_problems": list(s.slurm_problems),
        }
        for s in snapshots
    ]
    return RESULT_PREFIX + json.dumps(payload)


def decode_snapshots(output: str) -> tuple[RunSnapshot, ...] | None:
    """The snapshots in a command's output (anything printed around the framed line is ignored)."""
    lines = [line for line in output.splitlines() if line.startswith(RESULT_PREFIX)]
    if not lines:
        return None
    items = json.loads(lines[-1][len(RESULT_PREFIX) :])
    return tuple(
        RunSnapshot(
            record=str(item["record"]),
            lease=str(item.get("lease") or ""),
            lease_age=item.get("lease_age"),
            tracker=item.get("tracker"),
            jobs=tuple(
                JobStatus(str(j[0]), str(j[1]), JobState(j[2]), j[3], str(j[4])) for j in item["jobs"]
            ),
            slurm_problems=tuple(item.get("slurm_problems") or ()),
        )
        for item in items
    )
