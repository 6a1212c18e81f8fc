"""The SSH/SFTP transport: the connection, its commands and its files, plus folder-tree transfers."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from sl_pipelines.adapters import transfer
from sl_pipelines.adapters.ssh.files import RemoteFiles


class SSHTransport(RemoteFiles):
    """One persistent SSH connection with one SFTP client; a context manager.

    Connection handling is :class:`~sl_pipelines.adapters.ssh.connection.SSHConnection`'s, commands
    :class:`~sl_pipelines.adapters.ssh.commands.RemoteCommands`' and single files
    :class:`~sl_pipelines.adapters.ssh.files.RemoteFiles`'.

    Args:
        settings: where and how to connect.
        reconnect_attempts: how often a dropped connection is re-established before giving up.
        reconnect_delay: the first backoff delay in seconds (doubles each attempt).
    """

    def put_tree(
        self, local: Path, remote: PurePosixPath, *, verify: transfer.Verify = transfer.Verify.SIZE
    ) -> transfer.TransferReport:
        """Uploads a folder tree (small files in one tar stream, big ones over SFTP), then verifies it."""
        return transfer.put_tree(self, Path(local), remote, verify=verify)

    def get_tree(
        self, remote: PurePosixPath, local: Path, *, verify: transfer.Verify = transfer.Verify.SIZE
    ) -> transfer.TransferReport:
        """Downloads a folder tree (small files in one tar stream, big ones over SFTP), then verifies it."""
        return transfer.get_tree(self, remote, Path(local), verify=verify)
