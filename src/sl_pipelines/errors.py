"""The exception tree of sl_pipelines.

Every error the package raises derives from :class:`SlPipelinesError`, carries the facts a user needs
(path, job, command, exit code, stderr) as attributes, and reads as one sentence that says what is
wrong and what to do. Foreign errors (paramiko, socket, YAML, OS) are translated once, at the adapter
boundary, with ``raise ... from exc``.

::

    SlPipelinesError
    ├── ConfigurationError (ValueError)          bad profile, bad pipeline YAML, bad argument
    │   └── PipelineDefinitionError              a pipeline YAML that does not match the schema
    ├── SessionNotFoundError (LookupError)       no such session under the storage root
    ├── TrackerError
    │   ├── TrackerOwnershipError (PermissionError)  the tracker is running under another manager id
    │   ├── TrackerCorruptError (ValueError)          the YAML is unreadable or hand-mangled
    │   └── TrackerLockTimeout (TimeoutError)         the lock could not be had in time
    ├── ServerError                              anything that went wrong talking to the server
    │   ├── HostUnreachableError (ConnectionError)
    │   ├── AuthenticationFailedError (PermissionError)
    │   ├── HostKeyError
    │   │   ├── UnknownHostKeyError
    │   │   └── HostKeyMismatchError
    │   ├── RemoteCommandError                   a command exited non-zero (command, exit code, stderr)
    │   ├── RemoteTimeoutError (TimeoutError)
    │   └── TransferError                        a push/pull that failed or did not verify
    │       └── SessionExistsError (FileExistsError)  an upload met different raw data already there
    ├── SchedulerError                           Slurm refused or garbled an answer
    │   └── SubmissionError                      a job was not submitted (refused, or the outcome unknown)
    ├── PipelineError                            orchestration could not proceed
    │   ├── JournalError                         the local run journal is unreadable
    │   └── RunLockedError                       another manager already drives the run
    └── WorkerError                              a server-side worker could not do its job
        └── VerificationError                    a copy or checksum did not verify
"""

from __future__ import annotations

from pathlib import PurePath


class SlPipelinesError(Exception):
    """Base class of every error raised by sl_pipelines."""


class ConfigurationError(SlPipelinesError, ValueError):
    """A configuration value, file or argument is invalid."""

    def __init__(self, message: str, *, path: PurePath | str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.key = key


class PipelineDefinitionError(ConfigurationError):
    """A pipeline definition (YAML in ``configs/``) does not match the schema."""


class SessionNotFoundError(SlPipelinesError, LookupError):
    """The named session does not exist under the storage root."""

    def __init__(self, message: str, *, session: str) -> None:
        super().__init__(message)
        self.session = session


class TrackerError(SlPipelinesError):
    """Base class of processing-tracker errors; carries the tracker file path."""

    def __init__(self, message: str, *, path: PurePath | str) -> None:
        super().__init__(message)
        self.path = path


class TrackerOwnershipError(TrackerError, PermissionError):
    """The tracker runs under another manager id than the caller's."""

    def __init__(self, message: str, *, path: PurePath | str, owner: int, caller: int) -> None:
        super().__init__(message, path=path)
        self.owner = owner
        self.caller = caller


class TrackerCorruptError(TrackerError, ValueError):
    """The tracker file exists but is not a valid tracker document."""


class TrackerLockTimeout(TrackerError, TimeoutError):
    """The tracker's lock file could not be acquired within the timeout."""

    def __init__(
        self, message: str, *, path: PurePath | str, lock_path: PurePath | str, timeout: float
    ) -> None:
        super().__init__(message, path=path)
        self.lock_path = lock_path
        self.timeout = timeout


class ServerError(SlPipelinesError):
    """Base class of errors talking to the remote server; carries the host."""

    def __init__(self, message: str, *, host: str = "") -> None:
        super().__init__(message)
        self.host = host


class HostUnreachableError(ServerError, ConnectionError):
    """The server could not be reached (DNS, refused, network down, dropped)."""


class AuthenticationFailedError(ServerError, PermissionError):
    """The server refused every configured credential."""


class HostKeyError(ServerError):
    """The server's host key could not be verified."""


class UnknownHostKeyError(HostKeyError):
    """The server's host key is not in any known_hosts file."""


class HostKeyMismatchError(HostKeyError):
    """The server's host key differs from the one recorded in known_hosts."""


class RemoteCommandError(ServerError):
    """A remote command exited with a non-zero status."""

    def __init__(
        self,
        message: str,
        *,
        host: str = "",
        command: str,
        exit_code: int,
        stdout: str = "",
        stderr: str = "",
    ) -> None:
        super().__init__(message, host=host)
        self.command = command
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr


class RemoteTimeoutError(ServerError, TimeoutError):
    """A remote command or transfer did not finish within its timeout."""

    def __init__(self, message: str, *, host: str = "", command: str = "", timeout: float = 0.0) -> None:
        super().__init__(message, host=host)
        self.command = command
        self.timeout = timeout


class TransferError(ServerError):
    """A file transfer failed or did not verify."""

    def __init__(self, message: str, *, host: str = "", path: PurePath | str = "") -> None:
        super().__init__(message, host=host)
        self.path = path


class SessionExistsError(TransferError, FileExistsError):
    """An upload found different raw data for the session on the server; nothing was changed."""


class SchedulerError(SlPipelinesError):
    """Slurm refused a request or answered in a way that could not be parsed."""

    def __init__(self, message: str, *, command: str = "", output: str = "") -> None:
        super().__init__(message)
        self.command = command
        self.output = output


class SubmissionError(SchedulerError):
    """``sbatch`` did not return a job id."""

    def __init__(self, message: str, *, job_name: str, command: str = "", output: str = "") -> None:
        super().__init__(message, command=command, output=output)
        self.job_name = job_name


class PipelineError(SlPipelinesError):
    """The pipeline could not proceed (conflicting manager, inconsistent state)."""


class JournalError(PipelineError):
    """The local run journal of a pipeline is missing or unreadable."""

    def __init__(self, message: str, *, path: PurePath | str) -> None:
        super().__init__(message)
        self.path = path


class RunLockedError(PipelineError):
    """Another manager process already drives this run (it holds the run's lock)."""

    def __init__(self, message: str, *, token: str, holder: str) -> None:
        super().__init__(message)
        self.token = token
        self.holder = holder


class WorkerError(SlPipelinesError):
    """A server-side worker command could not do its job."""


class VerificationError(WorkerError):
    """A copy, move or checksum did not verify; nothing unverified was deleted."""

    def __init__(self, message: str, *, path: PurePath | str) -> None:
        super().__init__(message)
        self.path = path
