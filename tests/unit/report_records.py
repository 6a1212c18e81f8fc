"""Run records for the report tests: one with the attempt history and usage, one without."""

from __future__ import annotations

from typing import Any

TOKEN = "abc123def456"
SESSION = "proj/A1/<b>&;$(rm -rf ~)"
DEFINITION = "pipeline: suite2p\nstages:\n  - name: binarize\n  - name: planes\n  - name: combine\n"


def name(stage: int, key: str) -> str:
    return f"slp-{TOKEN}-{stage}-{key}"


def _usage(job: str, attempt: int, state: str, start: str, end: str, **more: Any) -> dict[str, Any]:
    base = {
        "name": job,
        "attempt": attempt,
        "state": state,
        "node": "n1",
        "submitted_at": f"2026-11-30T10:{start}+00:00",
        "started_at": f"2026-11-30T10:{start}+00:00",
        "ended_at": f"2026-11-30T10:{end}+00:00",
        "queue_wait_s": 0.0,
        "elapsed_s": 50.0,
        "cpu_s": 90.0,
        "cpus": 2,
        "cpu_efficiency": 0.9,
        "max_rss_mb": 800.0,
        "requested_memory_mb": 10240.0,
        "time_limit_minutes": 10,
        "source": "sacct",
    }
    return {**base, **more}


def bare_record(**changes: Any) -> dict[str, Any]:
    """A failed suite2p run's record as written before attempts and usage existed."""
    record: dict[str, Any] = {
        "token": TOKEN,
        "pipeline": "suite2p",
        "backend": "lab",
        "sessions": [SESSION],
        "manager_id": 42,
        "parameters": {},
        "configs_dir": "",
        "stage": 2,
        "status": "FAILED",
        "reason": "job 103 (plane-1) FAILED with exit code 1 <&>",
        "updated_at": "2026-11-30T10:05:00+00:00",
        "definition": DEFINITION,
        "started_by": {"user": "me", "host": "pc", "at": "2026-11-30T10:00:00+00:00"},
        "mode": "attached",
        "job_ids": {
            name(1, "binarize"): "100",
            name(2, "plane-0"): "102",
            name(2, "plane-1"): "103",
            name(2, "plane-2"): "104",
        },
    }
    record.update(changes)
    return record


def full_record(**changes: Any) -> dict[str, Any]:
    """The same run with plane-0 retried after OUT_OF_MEMORY, and usage for four of its Slurm jobs."""
    p0, p1 = name(2, "plane-0"), name(2, "plane-1")
    attempts = {
        p0: [
            {"attempt": 1, "job_id": "101", "state": "OUT_OF_MEMORY", "reason": "OutOfMemory", "memory_gb": 1,
             "time_limit_minutes": 10, "submitted_at": "2026-11-30T10:01:00+00:00"},
            {"attempt": 2, "job_id": "102", "state": "COMPLETED", "reason": "", "memory_gb": 2,
             "time_limit_minutes": 10, "submitted_at": "2026-11-30T10:02:10+00:00"},
        ]
    }  # fmt: skip
    usage = {
        "100": _usage(name(1, "binarize"), 1, "COMPLETED", "00:00", "00:50"),
        "101": _usage(p0, 1, "OUT_OF_MEMORY", "01:00", "02:00", max_rss_mb=1030.0, requested_memory_mb=1024),
        "102": _usage(p0, 2, "COMPLETED", "02:10", "04:00", max_rss_mb=1500.0, requested_memory_mb=2048),
        "103": _usage(p1, 1, "FAILED", "01:00", "01:30", cpu_efficiency=0.07, cpus=1, cpu_s=2.0),
    }
    return bare_record(attempts=attempts, usage=usage, **changes)
