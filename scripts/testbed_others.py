"""Other people's jobs for the testbed: held jobs of a user no test logs in as (stdlib only, run as root).

``scripts/testbed.sh load-others N [--cluster acct|noacct]`` makes the other user's held jobs on each
cluster number N: it submits the missing ones (``sbatch --hold``, so they never run and never change) or
cancels the surplus; ``load-others 0`` cancels them all. They stand for a busy cluster's queue in the
"probe cost with other people's jobs" measurement (``scripts/bench_scale.py``). Cancelled jobs stay
in slurmctld's memory for MinJobAge (300 s) as CANCELLED, as any finished job does.
"""

from __future__ import annotations

import grp
import pwd
import subprocess
from pathlib import Path

OTHER_USER = "sltest4"
"""The other user: in the test users' group, without a login shell; no test runs as it."""

JOB_NAME = "sl-others"


def ensure_other_user(group: str) -> None:
    """Creates the other user when missing (no home, no login)."""
    try:
        pwd.getpwnam(OTHER_USER)
    except KeyError:
        grp.getgrnam(group)
        subprocess.run(
            ["useradd", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", "-g", group, OTHER_USER],
            check=True,
        )


def held_jobs(env: dict[str, str]) -> list[str]:
    """The ids of the other user's pending jobs on the cluster of ``env``'s SLURM_CONF."""
    result = subprocess.run(
        ["squeue", "-h", "-u", OTHER_USER, "-t", "PD", "-o", "%i"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return result.stdout.split()


def submit_held(env: dict[str, str], count: int) -> None:
    """Submits ``count`` held one-line jobs as the other user, in one shell loop run as that user."""
    loop = (
        'for ((i=0; i<$1; i++)); do sbatch --hold --parsable -J "$2" -o /dev/null -e /dev/null '
        "--mem=10M -t 1 --wrap=true >/dev/null || exit 1; done"
    )
    subprocess.run(
        ["bash", "-c", loop, "load-others", str(count), JOB_NAME],
        env=env,
        user=OTHER_USER,
        group=grp.getgrgid(pwd.getpwnam(OTHER_USER).pw_gid).gr_name,
        extra_groups=[],
        cwd="/tmp",
        check=True,
        timeout=60 + count,
    )


def cancel(env: dict[str, str], job_ids: list[str]) -> None:
    """Cancels the given jobs (root may cancel anyone's), a thousand ids per scancel."""
    for start in range(0, len(job_ids), 1000):
        subprocess.run(["scancel", *job_ids[start : start + 1000]], env=env, check=True, timeout=120)


def load_others(slurm_conf: Path, base_env: dict[str, str], count: int) -> int:
    """Makes the other user's held jobs on one cluster number ``count``; returns how many there are."""
    env = dict(base_env, SLURM_CONF=str(slurm_conf))
    held = held_jobs(env)
    if len(held) < count:
        submit_held(env, count - len(held))
    elif len(held) > count:
        cancel(env, sorted(held, key=int)[count:])
    return len(held_jobs(env))
