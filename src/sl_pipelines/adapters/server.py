"""The Server: the one object that talks to a remote Slurm machine (commands, files, jobs).

It implements the :class:`~sl_pipelines.core.seams.Backend` protocol over one :class:`SSHTransport`.
Each typed operation is ONE remote command whose request travels on standard input: everything a
polling cycle needs (:meth:`Server.probe`), the state of any number of jobs (:meth:`Server.status`), a
batch of jobs with their scripts (:meth:`Server.submit_jobs`), and tracker claims and failure records
(:meth:`Server.update_trackers`). ``round_trips`` counts remote commands so that tests and benchmarks
can hold the server to that.
"""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Sequence
from types import TracebackType

from sl_pipelines.adapters.profiles import AccountingChoice, ServerProfile
from sl_pipelines.adapters.run_listing import decode_snapshots
from sl_pipelines.adapters.server_files import ServerFiles
from sl_pipelines.adapters.ssh import SSHSettings, SSHTransport
from sl_pipelines.core import sbatch
from sl_pipelines.core.arrays import Submission
from sl_pipelines.core.framing import MARKER, split_sections
from sl_pipelines.core.job import Environment, EnvironmentKind, Job, JobDefaults
from sl_pipelines.core.probe import KnownTrackers, LeaseRenewals, build_probe, parse_probe_output
from sl_pipelines.core.retry import PartitionLimits, parse_partitions
from sl_pipelines.core.script import activation_prefix
from sl_pipelines.core.seams import (
    CommandResult,
    ProbeRequest,
    ProbeResult,
    RunSnapshot,
    SubmissionReport,
    TrackerOperation,
    TrackerOutcome,
)
from sl_pipelines.core.slurm import AccountingMode
from sl_pipelines.core.states import JobStatus
from sl_pipelines.core.wire import decode_outcomes, encode_operations
from sl_pipelines.errors import RemoteCommandError, SchedulerError, ServerError, SubmissionError

_log = logging.getLogger("sl_pipelines")
_SCANCEL_HARMLESS = ("already completing or completed", "Invalid job id specified")
_CLUSTER_PROBE = (
    r"""echo '@M begin accounting'; _slp=$(sacct -n -X -S now 2>&1); _rc=$?; """
    r"""if [ $_rc -eq 0 ]; then echo sacct; """
    r"""elif printf '%s' "$_slp" | grep -qi 'accounting storage is disabled'; then echo scontrol; """
    r"""else echo "unknown $(printf '%s' "$_slp" | tr '\n' ' ')"; fi; echo '@M end 0'; """
    r"""echo '@M begin limits'; scontrol show config 2>&1 | grep -E '^(MaxArraySize|MaxJobCount) '; """
    r"""echo "@M end $?"; echo '@M begin partitions'; scontrol show partition -o 2>&1; echo "@M end $?"; """
    r"""echo '@M begin shell'; echo "${BASH_VERSION-}"; echo '@M end 0'"""
).replace("@M", MARKER)
_DEFAULT_MAX_ARRAY_SIZE = 1001  # Slurm's default


def settings_from_profile(profile: ServerProfile) -> SSHSettings:
    """The transport settings of a profile (the server Python is the environment's, for hashing)."""
    python = "python3"
    if profile.environment.kind is EnvironmentKind.VENV and profile.environment.value:
        python = shlex.quote(f"{profile.environment.value.rstrip('/')}/bin/python")
    return SSHSettings(
        host=profile.host,
        port=profile.port,
        user=profile.user,
        key_file=profile.key_file,
        use_agent=profile.use_agent,
        password=profile.password,
        known_hosts=profile.known_hosts,
        trust_unknown_hosts=profile.trust_unknown_hosts,
        connect_timeout=profile.connect_timeout,
        command_timeout=profile.command_timeout,
        remote_python=python,
        label=profile.name,
    )


class Server(ServerFiles):
    """A Slurm server reached over SSH; a context manager that closes the connection.

    Args:
        profile: how to reach the server and where things live there.
        transport: the SSH transport to use (default: one built from the profile).
    """

    def __init__(self, profile: ServerProfile, *, transport: SSHTransport | None = None) -> None:
        self.profile = profile
        self.transport = transport or SSHTransport(settings_from_profile(profile))
        self._accounting: AccountingMode | None = None
        self._max_array: int | None = None
        self._partitions: tuple[dict[str, PartitionLimits], str | None] | None = None
        self._login_bash: bool | None = None  # bash runs the commands: the probe skips its own bash
        self._known_trackers = KnownTrackers()  # the probe sends only trackers that changed
        self._lease_renewals = LeaseRenewals()  # and touches each lease every RENEW_EVERY s
        if profile.accounting is not AccountingChoice.AUTO:
            self._accounting = AccountingMode(profile.accounting.value)

    # ----------------------------------------------------------------------------- Backend basics

    @property
    def environment(self) -> Environment:
        """The server-side environment job scripts activate."""
        return self.profile.environment

    @property
    def job_exports(self) -> tuple[tuple[str, str], ...]:
        """Jobs use the profile's tracker lock kind, the same as the manager's claims."""
        return (("SL_TRACKER_LOCK", self.profile.tracker_lock.value),)

    @property
    def report_grace_seconds(self) -> float:
        """How long a job's tracker write may take to reach this manager: NFS (soft lock) caches for up to
        a minute; a local disk shows it at once, but a few seconds cover a slow file system."""
        return 60.0 if self.profile.tracker_lock.value == "soft" else 5.0

    @property
    def job_defaults(self) -> JobDefaults:
        """The profile's partition, account, qos and gres, for jobs whose definition leaves them unset."""
        return self.profile.job_defaults

    @property
    def round_trips(self) -> int:
        """Remote commands run so far over this server's connection."""
        return self.transport.exec_count

    @property
    def accounting_mode(self) -> AccountingMode:
        """Where finished jobs are looked up (detected on first use unless the profile forces it).

        Raises:
            SchedulerError: the detection gave no answer (see :meth:`detect_cluster`).
        """
        if self._accounting is None:
            self.detect_cluster()
        assert self._accounting is not None
        return self._accounting

    @property
    def max_array_size(self) -> int:
        """The cluster's ``MaxArraySize``: array task indexes stay below it (read once, at first use)."""
        if self._max_array is None:
            self.detect_cluster()
        assert self._max_array is not None
        return self._max_array

    @property
    def login_bash(self) -> bool:
        """True when the account's login shell is bash (it then runs the probe program itself)."""
        if self._login_bash is None:
            self.detect_cluster()
        return bool(self._login_bash)

    def detect_cluster(self) -> None:
        """Reads, in ONE command, whether ``sacct`` works, the cluster's array and job limits, its partitions'
        limits and whether the login shell is bash.

        The answers are framed by marker lines (a login shell may print a banner). ``sacct`` failing
        because accounting is disabled means scontrol mode; failing for any other reason (munge or
        slurmdbd down) is not an answer, and nothing is cached.

        Raises:
            SchedulerError: the check printed no usable answer; names what it printed.
        """
        result = self.run(_CLUSTER_PROBE)
        sections = {s.name: s for s in split_sections(result.stdout)}
        accounting = " ".join(sections["accounting"].lines).strip() if "accounting" in sections else ""
        if self._accounting is None and accounting not in (AccountingMode.SACCT, AccountingMode.SCONTROL):
            said = accounting or " ".join((result.stdout + result.stderr).split())[-200:] or "nothing"
            raise SchedulerError(
                f"Could not tell whether {self.name} has Slurm accounting (the check printed: {said}); "
                "it is asked again next time, or set the profile's accounting to sacct or scontrol.",
                command=_CLUSTER_PROBE,
                output=result.stdout + result.stderr,
            )
        if self._accounting is None:
            self._accounting = AccountingMode(accounting)
            _log.info("Server %s: finished jobs are looked up with %s", self.name, self._accounting.value)
        limits = {
            key.strip(): value.strip()
            for line in (sections["limits"].lines if "limits" in sections else ())
            for key, _, value in [line.partition("=")]
        }
        size = limits.get("MaxArraySize", "").split()
        self._max_array = int(size[0]) if size and size[0].isdigit() else _DEFAULT_MAX_ARRAY_SIZE
        partitions = sections.get("partitions")
        self._partitions = parse_partitions(partitions.lines if partitions and partitions.ok else ())
        shell = sections.get("shell")
        self._login_bash = bool(shell and shell.ok and shell.lines and shell.lines[0][:1].isdigit())

    def partition_limits(self, partition: str | None) -> PartitionLimits:
        """The partition's ``MaxMemPerNode`` and ``MaxTime`` (read once, with the cluster's other limits);
        no limits when the partition is unknown or the cluster did not say."""
        if self._partitions is None:
            self.detect_cluster()
        assert self._partitions is not None
        partitions, default = self._partitions
        return partitions.get(partition or default or "", PartitionLimits())

    def connect(self) -> None:
        """Connects now and detects the accounting mode (otherwise both happen on first use)."""
        self.transport.connect()
        _ = self.accounting_mode

    def close(self) -> None:
        """Closes the connection."""
        self.transport.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ----------------------------------------------------------------------------- commands

    def run(self, command: str, timeout: float | None = None, check: bool = False) -> CommandResult:
        """Runs a shell command; with ``check`` a non-zero exit raises RemoteCommandError."""
        if check:
            return self.transport.run_checked(command, timeout=timeout)
        return self.transport.run(command, timeout=timeout)

    def update_trackers(self, operations: Sequence[TrackerOperation]) -> tuple[TrackerOutcome, ...]:
        """Claims, failure records and aborts, applied on the server by ``sl-tracker batch``: ONE command.

        Raises:
            SchedulerError: the server gave no readable answer (sl-tracker missing or too old).
        """
        if not operations:
            return ()
        lock = shlex.quote(self.profile.tracker_lock.value)
        command = f"{activation_prefix(self.environment)}SL_TRACKER_LOCK={lock} sl-tracker batch"
        result = self.transport.run(command, idempotent=False, stdin=encode_operations(operations))
        try:
            return decode_outcomes(result.stdout, len(operations), where=self.name)
        except SchedulerError as exc:
            said = " ".join((result.stderr or result.stdout).split())[-300:] or f"exit {result.exit_code}"
            raise SchedulerError(f"{exc} (It said: {said})", command=command, output=exc.output) from exc

    # ----------------------------------------------------------------------------- Slurm

    def submit(self, job: Job) -> str:
        """Writes the job's script and submits it; returns the job id (never retried blindly).

        Raises:
            SubmissionError: the job was not submitted, or its outcome is unknown; says which and why.
        """
        report = self.submit_jobs([job])
        if job.name in report.submitted:
            return report.submitted[job.name]
        reason = report.refused.get(job.name) or report.deferred.get(job.name)
        raise SubmissionError(
            f"Job {job.name} was not submitted on {self.name}: "
            f"{reason or 'the connection dropped during sbatch, so whether it was is unknown'}.",
            job_name=job.name,
        )

    def check_tracker_command(self) -> CommandResult:
        """Runs ``sl-tracker batch`` with nothing to do: exit 0 and a framed answer when it is installed."""
        lock = shlex.quote(self.profile.tracker_lock.value)
        command = f"{activation_prefix(self.environment)}SL_TRACKER_LOCK={lock} sl-tracker batch"
        return self.transport.run(command, stdin=encode_operations([]))

    def submit_jobs(self, jobs: Sequence[Job | Submission]) -> SubmissionReport:
        """Writes every script on the server and submits them all (up to 8 sbatch at once): ONE command.

        Each job is submitted, refused (Slurm refused it, or its script could not be written), deferred
        (the controller did not answer, a submit limit: certainly not submitted) or unknown (the
        connection dropped or the command timed out: look the job up by name before trying again).
        An array submission reports each task under its own job name, with the id ``<array>_<index>``.
        """
        submissions = [item if isinstance(item, Submission) else Submission(item) for item in jobs]
        if not submissions:
            return SubmissionReport()
        command, data = sbatch.build_submit(submissions)
        names = [job.name for submission in submissions for job in submission.jobs]
        timeout = self.profile.command_timeout + 0.2 * len(submissions)
        try:
            result = self.transport.run(command, idempotent=False, stdin=data, timeout=timeout)
        except ServerError as exc:
            _log.warning("Submission on %s ended without an answer: %s", self.name, exc)
            return SubmissionReport(unknown=tuple(names), round_trips=1)
        if MARKER not in result.stdout:
            said = " ".join((result.stderr or result.stdout).split())[-300:] or f"exit {result.exit_code}"
            reason = f"the submission command on {self.name} printed nothing usable ({said})"
            return SubmissionReport(deferred=dict.fromkeys(names, reason), round_trips=1)
        return sbatch.classify_submission(result.stdout, submissions, completed=True)

    def status(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """The state of every given job, in ONE remote command whatever their number."""
        if not job_ids:
            return {}
        result = self.probe(ProbeRequest(job_ids=tuple(job_ids)))
        return {status.job_id: status for status in result.jobs if status.job_id in set(job_ids)}

    def cancel(self, job_ids: Sequence[str]) -> None:
        """Cancels the given jobs with one ``scancel``; already finished or unknown jobs are ignored."""
        if not job_ids:
            return
        command = shlex.join(("scancel", *job_ids))
        result = self.transport.run(command)
        problems = [
            line
            for line in result.stderr.splitlines()
            if line.strip() and not any(harmless in line for harmless in _SCANCEL_HARMLESS)
        ]
        if result.exit_code != 0 and problems:
            raise RemoteCommandError(
                f"scancel could not cancel jobs {', '.join(job_ids)} on {self.name}: {' '.join(problems)}.",
                host=self.transport.host,
                command=command,
                exit_code=result.exit_code,
                stderr=result.stderr,
            )

    def probe(self, request: ProbeRequest) -> ProbeResult:
        """Job states (by id, and by name only where no id is known) and tracker texts: ONE command.

        Raises:
            SchedulerError: the command printed nothing usable (no bash, a broken login shell).
        """
        if not (request.job_ids or request.job_names or request.tracker_paths or request.usage):
            return ProbeResult()
        now = time.monotonic()
        due = self._lease_renewals.due(request, now)
        command, data = build_probe(
            request, self.accounting_mode, self._known_trackers.digests(), due, login_bash=self.login_bash
        )
        result = self.transport.run(command, stdin=data)
        if MARKER not in result.stdout:
            raise SchedulerError(
                f"The status query on {self.name} printed nothing usable (exit {result.exit_code}: "
                f"{result.stderr.strip() or 'no message'}); check that bash and the Slurm commands work "
                "there.",
                command=command,
                output=result.stdout + result.stderr,
            )
        answer = parse_probe_output(result.stdout, request, self._known_trackers.texts())
        self._known_trackers.update(answer.trackers)
        self._lease_renewals.renewed(due, result.stdout, answer, now)
        return answer

    def list_runs(self) -> tuple[RunSnapshot, ...]:
        """Every run recorded on the server, with its lease, tracker and jobs: ONE command (read-only).

        Raises:
            SchedulerError: sl-tracker gave no answer (not installed, or too old, in the environment).
        """
        root = shlex.quote(str(self.working_root))
        command = (
            f"{activation_prefix(self.environment)}sl-tracker runs --working-root {root} "
            f"--mode {self.accounting_mode.value}"
        )
        result = self.transport.run(command)
        snapshots = decode_snapshots(result.stdout)
        if snapshots is None:
            said = " ".join((result.stderr or result.stdout).split())[-300:] or f"exit {result.exit_code}"
            raise SchedulerError(
                f"Listing the runs on {self.name} gave no answer ({said}); check that the profile's "
                "environment has this version of sl_pipelines (sl-server profile check).",
                command=command,
                output=result.stdout + result.stderr,
            )
        return snapshots
