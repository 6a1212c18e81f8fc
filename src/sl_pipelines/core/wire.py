"""How typed backend operations travel to the server and back (pure: no I/O).

A request goes to a remote command on its standard input, so its size never meets a command-line limit.
An answer comes back on one framed line, ``@@SLP@@ result <json>``, so text printed by a chatty login
shell (a banner in ``~/.bashrc``) around it is ignored.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

from sl_pipelines.core.framing import MARKER
from sl_pipelines.core.seams import TrackerAction, TrackerOperation, TrackerOutcome
from sl_pipelines.errors import SchedulerError

RESULT_PREFIX = f"{MARKER} result "


def encode_operations(operations: Sequence[TrackerOperation]) -> bytes:
    """The JSON request of ``sl-tracker batch`` (one object per operation)."""
    payload = [
        {
            "action": op.action.value,
            "path": str(op.path),
            "manager_id": op.manager_id,
            "job_count": op.job_count,
            "job": op.job,
            "reason": op.reason,
            "attempt": op.attempt,
        }
        for op in operations
    ]
    return json.dumps(payload).encode("utf-8")


def decode_operations(data: bytes | str) -> tuple[TrackerOperation, ...]:
    """Parses a request made by :func:`encode_operations`.

    Raises:
        ValueError: the request is not such a list.
    """
    items = json.loads(data)
    if not isinstance(items, list):
        raise ValueError("the request must be a JSON list of operations")
    return tuple(_operation(item) for item in items)


def _operation(item: Any) -> TrackerOperation:
    if not isinstance(item, dict):
        raise ValueError(f"an operation must be a JSON object, not {item!r}")
    return TrackerOperation(
        action=TrackerAction(str(item["action"])),
        path=PurePosixPath(str(item["path"])),
        manager_id=int(item.get("manager_id", 0)),
        job_count=int(item.get("job_count", 1)),
        job=str(item.get("job", "")),
        reason=str(item.get("reason", "")),
        attempt=int(item.get("attempt", 0)),
    )


def encode_outcomes(outcomes: Sequence[TrackerOutcome]) -> str:
    """The framed answer line of ``sl-tracker batch``."""
    payload = [{"ok": o.ok, "error": o.error, "transient": o.transient} for o in outcomes]
    return RESULT_PREFIX + json.dumps(payload)


def decode_outcomes(output: str, expected: int, *, where: str) -> tuple[TrackerOutcome, ...]:
    """Finds the framed answer in a command's output (ignoring anything printed around it).

    Raises:
        SchedulerError: no framed answer, or not one outcome per operation; names ``where``.
    """
    lines = [line for line in output.splitlines() if line.startswith(RESULT_PREFIX)]
    try:
        items = json.loads(lines[-1][len(RESULT_PREFIX) :])
        outcomes = tuple(
            TrackerOutcome(bool(i["ok"]), str(i.get("error") or ""), bool(i.get("transient"))) for i in items
        )
    except (IndexError, ValueError, TypeError, KeyError) as exc:
        raise SchedulerError(
            f"The tracker update on {where} gave no readable answer; check that sl-tracker is installed in "
            "the profile's environment (sl-server profile check).",
            output=output,
        ) from exc
    if len(outcomes) != expected:
        raise SchedulerError(
            f"The tracker update on {where} answered for {len(outcomes)} of {expected} trackers; "
            "check the sl_pipelines version installed there.",
            output=output,
        )
    return outcomes
