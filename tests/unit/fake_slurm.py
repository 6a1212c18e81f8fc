#!/usr/bin/env python3
"""A stand-in for squeue, sacct, scontrol and sbatch, for testing the remote bash programs in real bash.

Run it as ``fake_slurm.py COMMAND ARGS...`` from wrappers named after the commands on PATH. State lives
in ``$FAKE_SLURM_DIR``:

* ``live.txt``: rows ``id|state|reason|name`` that squeue (and scontrol) know;
* ``acct.txt``: rows ``id|state|exitcode|reason|name`` that sacct knows;
* ``down``: when present, every command fails as when slurmctld does not answer;
* ``calls.log``: one line per call (the command and its arguments), appended.
"""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

STATE = Path(os.environ["FAKE_SLURM_DIR"])
DOWN = "Unable to contact slurm controller (connect failure)"


def rows(name: str) -> list[list[str]]:
    path = STATE / name
    lines = path.read_text().splitlines() if path.exists() else []
    return [line.split("|") for line in lines if line.strip()]


def option(args: list[str], *names: str) -> str | None:
    for index, arg in enumerate(args):
        for name in names:
            if arg == name and index + 1 < len(args):
                return args[index + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def squeue(args: list[str]) -> int:
    ids, names = option(args, "-j"), option(args, "--name")
    live = rows("live.txt")
    if ids is not None:
        wanted = ids.split(",")
        found = [r for r in live if r[0] in wanted or r[0].split("_")[0] in wanted]
        if not found and len(wanted) == 1:
            print("slurm_load_jobs error: Invalid job id specified")
            return 1
    elif names is not None:
        found = [r for r in live if r[3] in names.split(",")]
    else:  # every job of the user (the stand-in has one user)
        found = live
    for row in found:
        print("|".join(row))
    return 0


def sacct(args: list[str]) -> int:
    ids, names = option(args, "-j"), option(args, "--name")
    acct = rows("acct.txt")
    if ids is not None:
        found = [r for r in acct if r[0] in ids.split(",")]
    else:
        found = [r for r in acct if r[4] in (names or "").split(",")]
    for row in found:
        print("|".join(row))
    return 0


def scontrol(args: list[str]) -> int:
    job_id = args[-1]
    for row in rows("live.txt"):
        if row[0] == job_id:
            exit_code = "0:0" if row[1] == "COMPLETED" else "3:0"
            fields = f"JobState={row[1]} Reason={row[2]} ExitCode={exit_code}"
            print(f"JobId={row[0]} JobName={row[3]} UserId=u(1) {fields}")
            return 0
    print("slurm_load_jobs error: Invalid job id specified")
    return 1


def sbatch(args: list[str]) -> int:
    script = Path(args[-1]).read_text()
    for word, message in (
        ("REFUSE", "sbatch: error: Batch job submission failed: Invalid partition name specified"),
        ("TIMEOUT", "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation"),
    ):
        if word in script:
            print(message, file=sys.stderr)
            return 1
    with (STATE / "next_id.lock").open("w") as lock:  # sbatch runs in parallel: ids must stay unique
        fcntl.flock(lock, fcntl.LOCK_EX)
        counter = STATE / "next_id"
        value = int(counter.read_text()) if counter.exists() else 100
        counter.write_text(str(value + 1))
    print(f"{value};fake")
    return 0


def main() -> int:
    command, args = sys.argv[1], sys.argv[2:]
    with (STATE / "calls.log").open("a") as log:
        log.write(" ".join([command, *args]) + "\n")
    if (STATE / "down").exists():
        print(f"{command}: error: {DOWN}", file=sys.stderr)
        return 1
    handlers = {"squeue": squeue, "sacct": sacct, "scontrol": scontrol, "sbatch": sbatch}
    return handlers[command](args)


if __name__ == "__main__":
    sys.exit(main())
