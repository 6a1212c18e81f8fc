"""Run leases on the local disk: what the local backend does in-process for ``take_leases`` and for the
renewal in each probe (the Server does the same on the server, see :mod:`sl_pipelines.core.lease`)."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from sl_pipelines.core.lease import LEASE_NAME, LeaseOutcome, LeaseRequest


def take_lease(request: LeaseRequest) -> LeaseOutcome:
    """Takes the lease unless another holder's heartbeat is fresher than its stated limit (or forced)."""
    folder = Path(request.folder)
    folder.mkdir(parents=True, exist_ok=True)
    lease = folder / LEASE_NAME
    with (folder / f"{LEASE_NAME}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = lease.read_text(encoding="utf-8") if lease.exists() else ""
        first, *rest = text.splitlines() or [""]
        took_over = bool(first) and first != request.holder.holder_id
        info = {k: v for k, _, v in (line.partition("=") for line in rest)} if took_over else None
        age = time.time() - lease.stat().st_mtime if took_over else 0.0
        if took_over and not request.force and age <= float((info or {}).get("stale_after", "0") or 0):
            return LeaseOutcome(False, info, age)
        temp = folder / f".{LEASE_NAME}.{os.getpid()}.tmp"
        temp.write_text(request.holder.text(), encoding="utf-8")
        temp.replace(lease)
    return LeaseOutcome(True, info, age, took_over)


def renew_leases(leases: Sequence[tuple[PurePosixPath, str]]) -> dict[PurePosixPath, str]:
    """Touches each lease that still names its holder; returns the others with the id they name now."""
    lost: dict[PurePosixPath, str] = {}
    for path, holder in leases:
        try:
            with Path(path).open(encoding="utf-8") as stream:
                first = stream.readline().rstrip("\n")
        except FileNotFoundError:
            first = ""
        if first == holder:
            os.utime(path)
        else:
            lost[path] = first
    return lost
