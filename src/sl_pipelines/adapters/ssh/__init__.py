"""The SSH/SFTP transport: one persistent paramiko connection and one SFTP client, opened lazily.

Only the modules of this package import paramiko; every paramiko and socket error is translated here,
once, into the :mod:`sl_pipelines.errors` tree. The package's modules, one responsibility each:

- :mod:`.settings` — :class:`SSHSettings` and the endpoint after ``~/.ssh/config``
  (HostName, User, Port, IdentityFile, ProxyJump);
- :mod:`.hostkeys` — known_hosts files, the policy that refuses unknown hosts (unless the profile
  trusts them) and changed keys (always), fingerprints, recording a key;
- :mod:`.tuning` — window, packet and request sizes, cipher order and rekeying, for throughput;
- :mod:`.connection` — connect, authenticate, keep alive, reconnect with backoff, translate errors,
  and :func:`fetch_host_key`; a dropped connection is re-established before an idempotent operation
  is retried, a non-idempotent one is never retried;
- :mod:`.deadlines` — limits for paramiko's own unlimited waits (channel requests, exit status), so a
  stalled server gives RemoteTimeoutError after the command timeout instead of hanging;
- :mod:`.commands` — running remote commands and streaming one (:class:`RemoteStream`);
- :mod:`.files` — single files, folders and small texts over the SFTP client;
- :mod:`.transport` — :class:`SSHTransport`, all of the above plus folder-tree transfers.
"""

from sl_pipelines.adapters.ssh.commands import RemoteStream
from sl_pipelines.adapters.ssh.connection import SSHConnection, fetch_host_key
from sl_pipelines.adapters.ssh.hostkeys import (
    changed_key_refusal,
    fingerprint,
    record_host_key,
    recorded_key,
    trust_target,
)
from sl_pipelines.adapters.ssh.settings import SYSTEM_KNOWN_HOSTS, Endpoint, SSHSettings, resolve_endpoint
from sl_pipelines.adapters.ssh.transport import SSHTransport
from sl_pipelines.adapters.ssh.tuning import (
    KEEPALIVE_SECONDS,
    MAX_PACKET_SIZE,
    PREFETCH_REQUESTS,
    REKEY_AFTER_BYTES,
    SFTP_REQUEST_SIZE,
    WINDOW_SIZE,
)

__all__ = [
    "KEEPALIVE_SECONDS",
    "MAX_PACKET_SIZE",
    "PREFETCH_REQUESTS",
    "REKEY_AFTER_BYTES",
    "SFTP_REQUEST_SIZE",
    "SYSTEM_KNOWN_HOSTS",
    "WINDOW_SIZE",
    "Endpoint",
    "RemoteStream",
    "SSHConnection",
    "SSHSettings",
    "SSHTransport",
    "changed_key_refusal",
    "fetch_host_key",
    "fingerprint",
    "record_host_key",
    "recorded_key",
    "resolve_endpoint",
    "trust_target",
]
