"""Sending notifications: JSON webhooks (urllib) and e-mail (smtplib), off the polling cycle's thread.

:class:`Notifier` queues each message and one background thread sends it to every target, each with a
short timeout. A target that fails (unreachable, an HTTP error, SMTP refused) is logged and skipped: a
notification never stops or slows a run. :meth:`Notifier.close` waits a bounded time for what is queued.
"""

from __future__ import annotations

import json
import logging
import queue
import smtplib
import socket
import ssl
import stat
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from sl_pipelines.core.notify_text import Notice, NotifyTarget, TargetKind
from sl_pipelines.errors import ConfigurationError

logger = logging.getLogger("sl_pipelines")

TIMEOUT = 5.0
"""Seconds one target may take to accept one message."""

CLOSE_WAIT = 20.0
"""Seconds :meth:`Notifier.close` waits at most for queued messages at the end of a run."""


@dataclass(frozen=True)
class SmtpSettings:
    """How e-mail goes out (a profile's ``smtp:`` block).

    Attributes:
        host, port: the SMTP server (port 587 with ``starttls``, 25 for a local relay).
        sender: the From address (default: ``user@host`` of this computer).
        user: the login, when the server wants one.
        starttls: upgrade the connection with STARTTLS before logging in.
        password_file: a file (mode 0600) holding the login's password.
        password_in_keyring: the password is in the OS keyring (service ``sl_pipelines``, user
            ``<profile>/smtp``).
        password: the password, once fetched (never shown).
    """

    host: str = "localhost"
    port: int = 25
    sender: str = ""
    user: str | None = None
    starttls: bool = False
    password_file: Path | None = None
    password_in_keyring: bool = False
    password: str | None = field(default=None, repr=False)

    def to_mapping(self) -> dict[str, Any]:
        """The settings as YAML-ready data (never the password)."""
        data: dict[str, Any] = {"host": self.host, "port": self.port, "starttls": self.starttls}
        for key, value in (("from", self.sender), ("user", self.user), ("password_file", self.password_file)):
            if value:
                data[key] = str(value)
        if self.password_in_keyring:
            data["password_in_keyring"] = True
        return data

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> SmtpSettings:
        """Reads a profile's ``smtp:`` block.

        Raises:
            KeyError, TypeError: an unknown key or a value of the wrong type (the profile names the key).
        """
        known = {"host", "port", "from", "user", "starttls", "password_file", "password_in_keyring"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise KeyError(f"unknown smtp key {unknown[0]!r} (known: {', '.join(sorted(known))})")
        port = data.get("port", 25)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise TypeError("smtp port must be a whole number 1-65535")
        for key in ("starttls", "password_in_keyring"):
            if not isinstance(data.get(key, False), bool):
                raise TypeError(f"smtp {key} must be true or false")
        for key in ("host", "from", "user", "password_file"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise TypeError(f"smtp {key} must be text")
        password_file = data.get("password_file")
        return cls(
            host=data.get("host") or "localhost",
            port=port,
            sender=data.get("from") or "",
            user=data.get("user") or None,
            starttls=data.get("starttls", False),
            password_file=Path(password_file).expanduser() if password_file else None,
            password_in_keyring=data.get("password_in_keyring", False),
        )


def read_password_file(path: Path) -> str:
    """The SMTP password kept in ``path``, which only its owner may read.

    Raises:
        ConfigurationError: the file cannot be read, or others may read or write it.
    """
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        message = f"Cannot read the SMTP password file {path}: {exc.strerror}."
        raise ConfigurationError(message, path=path) from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigurationError(
            f"The SMTP password file {path} may be read by others (mode {stat.S_IMODE(mode):o}); "
            f"run 'chmod 600 {path}'.",
            path=path,
        )
    return text.strip()


def send_webhook(url: str, notice: Notice, timeout: float = TIMEOUT) -> None:
    """POSTs ``{"text": …}`` to a Slack- or Mattermost-style incoming webhook.

    Raises:
        OSError: the server is unreachable, too slow, or answered with an HTTP error.
    """
    body = json.dumps({"text": notice.text}).encode("utf-8")
    request = urllib.request.Request(  # noqa: S310 - the scheme was checked: http or https only
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        response.read()


def send_mail(address: str, notice: Notice, settings: SmtpSettings, timeout: float = TIMEOUT) -> None:
    """Sends ``notice`` as an e-mail to ``address`` through the SMTP server of ``settings``.

    Raises:
        OSError, smtplib.SMTPException: the server is unreachable or refused the message.
    """
    message = EmailMessage()
    message["Subject"] = notice.subject
    message["From"] = settings.sender or f"sl_pipelines@{socket.getfqdn()}"
    message["To"] = address
    message.set_content(notice.text)
    with smtplib.SMTP(settings.host, settings.port, timeout=timeout) as smtp:
        if settings.starttls:
            smtp.starttls(context=ssl.create_default_context())
        if settings.user:
            smtp.login(settings.user, settings.password or "")
        smtp.send_message(message)


Sender = Callable[[NotifyTarget, Notice], None]


class Notifier:
    """Sends notices to targets from a background thread; failures are logged, never raised.

    Args:
        targets: where every notice goes.
        smtp: how e-mail goes out.
        timeout: seconds one target may take per notice.
        sender: sends one notice to one target (tests pass their own; default: webhook or mail).
    """

    def __init__(
        self,
        targets: Sequence[NotifyTarget],
        smtp: SmtpSettings | None = None,
        *,
        timeout: float = TIMEOUT,
        sender: Sender | None = None,
    ) -> None:
        self.targets = tuple(targets)
        self.smtp = smtp or SmtpSettings()
        self.timeout = timeout
        self._send = sender or self._deliver
        self._queue: queue.Queue[Notice | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.failed = 0

    def post(self, notice: Notice) -> None:
        """Queues ``notice`` for every target and returns at once."""
        if not self.targets:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="sl-notify", daemon=True)
            self._thread.start()
        self._queue.put(notice)

    def close(self, wait: float = CLOSE_WAIT) -> None:
        """Sends what is queued, waiting at most ``wait`` seconds; then stops the thread."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(wait)
        if self._thread.is_alive():
            logger.warning("Notifications still unsent after %.0f s were dropped.", wait)
        self._thread = None

    def _work(self) -> None:
        while (notice := self._queue.get()) is not None:
            for target in self.targets:
                try:
                    self._send(target, notice)
                    self.sent += 1
                except (OSError, smtplib.SMTPException, ValueError, ConfigurationError) as exc:
                    self.failed += 1
                    said = _said(exc)
                    logger.warning("Notification to %s failed (%s); the run goes on.", target.label, said)

    def _deliver(self, target: NotifyTarget, notice: Notice) -> None:
        if target.kind is TargetKind.WEBHOOK:
            send_webhook(target.address, notice, self.timeout)
        else:
            send_mail(target.address, notice, self.smtp, self.timeout)


def _said(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return " ".join(str(exc).split()) or type(exc).__name__
