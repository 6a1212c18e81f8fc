"""The Server: the one object that talks to a remote Slurm machine (commands, files, jobs).

It implements the :class:`~sl_pipelines.core.seams.Backend` protocol over one :class:`SSHTransport`.
Everything a polling cycle needs is ONE remote command (:meth:`Server.probe`); the state of any number
of jobs is ONE command (:meth:`Server.status`); a batch of jobs is submitted with its scripts pushed
through the one SFTP client and ONE ``sbatch`` command. ``round_trips`` counts remote commands so that
tests and benchmarks can hold the server to that.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from types import TracebackType

from sl_pipelines.adapters.profiles import AccountingChoice, ServerProfile
from sl_pipelines.adapters.ssh import SSHSettings, SSHTransport
from sl_pipelines.adapters.transfer import TransferReport, Verify
from sl_pipelines.core import sbatch, slurm
from sl_pipelines.core.job import Environment, EnvironmentKind, Job
from sl_pipelines.core.script import activation_prefix
from sl_pipelines.core.seams import CommandResult, ProbeRequest, ProbeResult
from sl_pipelines.core.slurm import AccountingMode
from sl_pipelines.core.states import JobStatus
from sl_pipelines.errors import BatchSubmissionError, RemoteCommandError, SchedulerError

_log = logging.getLogger("sl_pipelines")
_SCANCEL_HARMLESS = ("already completing or completed", "Invalid job id specified")
_ACCOUNTING_PROBE = (
    f"echo '{slurm.MARKER} begin accounting'; "
    "if sacct -n -X -S now >/dev/null 2>&1; then echo sacct; else echo scontrol; fi; "
    f"echo '{slurm.MARKER} end 0'"
)


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


class Server:
    """A Slurm server reached over SSH; a context manager that closes the connection.

    Args:
        profile: how to reach the server and where things live there.
        transport: the SSH transport to use (default: one built from the profile).
    """

    def __init__(self, profile: ServerProfile, *, transport: SSHTransport | None = None) -> None:
        self.profile = profile
        self.transport = transport or SSHTransport(settings_from_profile(profile))
        self._accounting: AccountingMode | None = None
        if profile.accounting is not AccountingChoice.AUTO:
            self._accounting = AccountingMode(profile.accounting.value)

    # ----------------------------------------------------------------------------- Backend basics

    @property
    def name(self) -> str:
        """The profile's name."""
        return self.profile.name

    @property
    def storage_root(self) -> PurePosixPath:
        """The slow, large volume: raw data and trackers."""
        return self.profile.storage_root

    @property
    def working_root(self) -> PurePosixPath:
        """The fast volume: processing output and job folders."""
        return self.profile.working_root

    @property
    def environment(self) -> Environment:
        """The server-side environment job scripts activate."""
        return self.profile.environment

    @property
    def job_exports(self) -> tuple[tuple[str, str], ...]:
        """Jobs use the profile's tracker lock kind, the same as the manager's claims."""
        return (("SL_TRACKER_LOCK", self.profile.tracker_lock.value),)

    @property
    def round_trips(self) -> int:
        """Remote commands run so far over this server's connection."""
        return self.transport.exec_count

    @property
    def accounting_mode(self) -> AccountingMode:
        """Where finished jobs are looked up (detected on first use unless the profile forces it).

        The answer is framed by marker lines: a login shell may print a banner before it.

        Raises:
            SchedulerError: the detection printed no answer (the shell or the server misbehaves).
        """
        if self._accounting is None:
            result = self.run(_ACCOUNTING_PROBE)
            sections = slurm.split_sections(result.stdout)
            answer = [line.strip() for s in sections if s.name == "accounting" for line in s.lines]
            if answer not in ([AccountingMode.SACCT.value], [AccountingMode.SCONTROL.value]):
                said = " ".join((result.stdout + result.stderr).split())[-200:] or "nothing"
                raise SchedulerError(
                    f"Could not tell whether {self.name} has Slurm accounting (the check printed: {said}); "
                    "set the profile's accounting to sacct or scontrol.",
                    command=_ACCOUNTING_PROBE,
                    output=result.stdout + result.stderr,
                )
            self._accounting = AccountingMode(answer[0])
            _log.info("Server %s: finished jobs are looked up with %s", self.name, self._accounting.value)
        return self._accounting

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

    def run_tracker(self, arguments: Sequence[str]) -> CommandResult:
        """Runs ``sl-tracker`` with the profile's environment activated, in ONE remote command."""
        lock = shlex.quote(self.profile.tracker_lock.value)
        tracker = shlex.join(("sl-tracker", *arguments))
        command = f"{activation_prefix(self.environment)}SL_TRACKER_LOCK={lock} {tracker}"
        return self.transport.run(command, idempotent=False)

    # ----------------------------------------------------------------------------- Slurm

    def submit(self, job: Job) -> str:
        """Pushes the job's script and submits it; returns the job id (never retried blindly)."""
        return self.submit_jobs([job])[0]

    def submit_jobs(self, jobs: Sequence[Job]) -> tuple[str, ...]:
        """Pushes every script through the one SFTP client, then submits all with ONE ``sbatch`` command.

        Raises:
            BatchSubmissionError: sbatch refused a job; names it, quotes Slurm, and lists the submitted ids.
            HostUnreachableError: the connection dropped during submission (not retried: check by name).
        """
        if not jobs:
            return ()
        scripts = [job.render() for job in jobs]  # render all first: a bad job submits nothing
        for folder in dict.fromkeys(job.working_directory for job in jobs):
            self._make_folder(folder)
        for job, script in zip(jobs, scripts, strict=True):
            self.transport.write_text_atomic(job.script_path, script)
        command = sbatch.build_submit_command([job.script_path for job in jobs])
        result = self.transport.run(command, idempotent=False)
        outcomes = sbatch.parse_submit_output(result.stdout, [job.name for job in jobs])
        submitted = {jobs[o.index].name: o.job_id for o in outcomes if o.job_id is not None}
        failed = next((o for o in outcomes if o.job_id is None), None)
        if failed is not None:
            raise _submission_error(jobs, failed, submitted, result)
        return tuple(o.job_id for o in outcomes if o.job_id is not None)

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
        """Job states (by id and by name) and tracker texts, in ONE remote command."""
        command = slurm.build_probe_command(request, self.accounting_mode)
        result = self.transport.run(command)
        if slurm.MARKER not in result.stdout and (
            request.job_ids or request.job_names or request.tracker_paths
        ):
            raise SchedulerError(
                f"The status query on {self.name} printed nothing usable (exit {result.exit_code}: "
                f"{result.stderr.strip() or 'no message'}); check that the Slurm commands work there.",
                command=command,
                output=result.stdout + result.stderr,
            )
        return slurm.parse_probe_output(result.stdout, request)

    # ----------------------------------------------------------------------------- files

    def push_file(self, local: Path, remote: PurePosixPath) -> int:
        """Uploads one file (mtime preserved); returns its size."""
        return self.transport.put_file(local, remote)

    def pull_file(self, remote: PurePosixPath, local: Path) -> int:
        """Downloads one file (mtime preserved); returns its size."""
        return self.transport.get_file(remote, local)

    def push_tree(
        self, local: Path, remote: PurePosixPath, *, verify: Verify = Verify.SIZE
    ) -> TransferReport:
        """Uploads a folder tree and verifies it (sizes, or xxHash with ``Verify.HASH``)."""
        return self.transport.put_tree(local, remote, verify=verify)

    def pull_tree(
        self, remote: PurePosixPath, local: Path, *, verify: Verify = Verify.SIZE
    ) -> TransferReport:
        """Downloads a folder tree and verifies it (sizes, or xxHash with ``Verify.HASH``)."""
        return self.transport.get_tree(remote, local, verify=verify)

    def exists(self, path: PurePosixPath) -> bool:
        """True when the path exists on the server."""
        return self.transport.exists(path)

    def remove(self, path: PurePosixPath) -> None:
        """Removes a file or a whole tree; a missing path is not an error."""
        self.transport.remove(path)

    def mkdir(self, path: PurePosixPath) -> None:
        """Creates a folder with its parents."""
        self.transport.mkdir(path)

    def write_text(self, path: PurePosixPath, text: str) -> None:
        """Writes a text file atomically (temporary name + rename)."""
        self.transport.write_text_atomic(path, text)

    def read_text(self, path: PurePosixPath, *, tail_bytes: int | None = None) -> str | None:
        """A file's text (or its last ``tail_bytes``), or None when it does not exist."""
        return self.transport.read_text(path, tail_bytes=tail_bytes)

    def list_dir(self, path: PurePosixPath) -> tuple[str, ...]:
        """Names in a folder (empty when it does not exist)."""
        return self.transport.list_dir(path)

    def _make_folder(self, folder: PurePosixPath) -> None:
        """Creates a job folder and missing parents through the SFTP client (no extra exec)."""
        self.transport.make_folders(folder)


def _submission_error(
    jobs: Sequence[Job], failed: sbatch.SubmitOutcome, submitted: Mapping[str, str], result: CommandResult
) -> BatchSubmissionError:
    job = jobs[failed.index]
    said = " ".join((failed.output or result.stderr).split()) or f"no output, exit {result.exit_code}"
    done = ", ".join(f"{name}={job_id}" for name, job_id in submitted.items()) or "none"
    skipped = len(jobs) - len(submitted) - 1
    return BatchSubmissionError(
        f"sbatch refused job {job.name!r} ({said}); submitted before it: {done}; {skipped} later job(s) were "
        "not submitted. Record the submitted ids, fix the cause, then submit the rest.",
        job_name=job.name,
        output=failed.output or result.stdout + result.stderr,
        submitted=submitted,
    )
