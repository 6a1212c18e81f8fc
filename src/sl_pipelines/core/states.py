"""Slurm job states, kept apart so that no failure reason is lost and nothing unknown counts as success."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class JobState(StrEnum):
    """The state of one Slurm job, as reported by squeue, sacct or scontrol."""

    PENDING = "PENDING"
    CONFIGURING = "CONFIGURING"
    RUNNING = "RUNNING"
    COMPLETING = "COMPLETING"
    SUSPENDED = "SUSPENDED"
    REQUEUED = "REQUEUED"
    REQUEUE_HOLD = "REQUEUE_HOLD"
    REQUEUE_FED = "REQUEUE_FED"
    RESV_DEL_HOLD = "RESV_DEL_HOLD"
    RESIZING = "RESIZING"
    SIGNALING = "SIGNALING"
    STAGE_OUT = "STAGE_OUT"
    STOPPED = "STOPPED"
    POWER_UP_NODE = "POWER_UP_NODE"
    LAUNCH_FAILED = "LAUNCH_FAILED"
    RECONFIG_FAIL = "RECONFIG_FAIL"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    CANCELLED = "CANCELLED"
    NODE_FAIL = "NODE_FAIL"
    PREEMPTED = "PREEMPTED"
    BOOT_FAIL = "BOOT_FAIL"
    DEADLINE = "DEADLINE"
    REVOKED = "REVOKED"
    SPECIAL_EXIT = "SPECIAL_EXIT"
    # Not a Slurm state: the scheduler no longer knows the job (purged after MinJobAge, no accounting).
    NOT_FOUND = "NOT_FOUND"
    # Not a Slurm state: an answer this package does not recognise. Never a success.
    UNKNOWN = "UNKNOWN"

    @property
    def is_active(self) -> bool:
        """True while the job is queued, running, held or finishing: its outcome is not known yet."""
        return self in _ACTIVE

    @property
    def may_requeue(self) -> bool:
        """True for a final-looking state after which Slurm may requeue the job (preemption, node loss).

        Such a state is only believed once it has lasted a settling period without the job coming back.
        """
        return self in (JobState.PREEMPTED, JobState.NODE_FAIL)

    @property
    def is_terminal(self) -> bool:
        """True once Slurm will not run the job any more (success or failure)."""
        return not self.is_active and self not in (JobState.NOT_FOUND, JobState.UNKNOWN)

    @property
    def is_failure(self) -> bool:
        """True for every terminal state other than COMPLETED."""
        return self.is_terminal and self is not JobState.COMPLETED

    @classmethod
    def parse(cls, text: str) -> JobState:
        """Maps a state as Slurm prints it (``CANCELLED by 1000``, ``CANCELLED+``, ``OOM``) to a member.

        Anything unrecognised maps to UNKNOWN, never to a success (the parsers keep the raw text as reason).
        """
        word = text.strip().split(" ", 1)[0].rstrip("+").upper()
        word = _ALIASES.get(word, word)
        try:
            return cls(word)
        except ValueError:
            return cls.UNKNOWN


_ACTIVE = frozenset(
    {
        JobState.PENDING,
        JobState.CONFIGURING,
        JobState.RUNNING,
        JobState.COMPLETING,
        JobState.SUSPENDED,
        JobState.REQUEUED,
        JobState.REQUEUE_HOLD,
        JobState.REQUEUE_FED,
        JobState.RESV_DEL_HOLD,
        JobState.RESIZING,
        JobState.SIGNALING,
        JobState.STAGE_OUT,
        JobState.STOPPED,
        JobState.POWER_UP_NODE,
        # SPECIAL_EXIT: the job exited with a special code and Slurm requeued it in a held state.
        JobState.SPECIAL_EXIT,
    }
)

_ALIASES = {
    "PD": "PENDING",
    "CF": "CONFIGURING",
    "R": "RUNNING",
    "CG": "COMPLETING",
    "S": "SUSPENDED",
    "RQ": "REQUEUED",
    "CD": "COMPLETED",
    "F": "FAILED",
    "TO": "TIMEOUT",
    "OOM": "OUT_OF_MEMORY",
    "CA": "CANCELLED",
    "NF": "NODE_FAIL",
    "PR": "PREEMPTED",
    "BF": "BOOT_FAIL",
    "DL": "DEADLINE",
    "RV": "REVOKED",
    "SE": "SPECIAL_EXIT",
    "RH": "REQUEUE_HOLD",
    "RF": "REQUEUE_FED",
    "RD": "RESV_DEL_HOLD",
    "SI": "SIGNALING",
    "SO": "STAGE_OUT",
    "ST": "STOPPED",
    "PW": "POWER_UP_NODE",
    "LF": "LAUNCH_FAILED",
}


@dataclass(frozen=True)
class JobStatus:
    """What the scheduler says about one job.

    Attributes:
        job_id: Slurm's job id as text (array tasks as ``123_4``).
        name: the job name (carries the pipeline's run token).
        state: the job's state.
        exit_code: the job's exit code when Slurm reports one, else None.
        reason: Slurm's reason text (``NonZeroExitCode``, ``TimeLimit``, ``Resources``) or "".
    """

    job_id: str
    name: str
    state: JobState
    exit_code: int | None = None
    reason: str = ""

    def describe(self) -> str:
        """One line for a user: ``job 123 (name) FAILED with exit code 3``."""
        text = f"job {self.job_id} ({self.name}) {self.state.value}"
        if self.exit_code not in (None, 0):
            text += f" with exit code {self.exit_code}"
        if self.reason and self.reason not in ("None", "(null)"):
            text += f" [{self.reason}]"
        return text
