"""Local receivers for notification tests: a webhook (http.server in a thread) and an SMTP server (aiosmtpd).

Import them with ``from notify_receivers import ...`` (the integration tests add this folder to the path).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller


@dataclass
class Webhook:
    """What a local webhook received: each POST's JSON body and content type."""

    url: str
    bodies: list[dict[str, Any]] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)
    status: int = 200

    def texts(self) -> list[str]:
        return [str(body.get("text", "")) for body in self.bodies]


@contextmanager
def webhook(status: int = 200) -> Iterator[Webhook]:
    """A webhook on 127.0.0.1 that answers every POST with ``status`` and keeps what it got."""
    received = Webhook(url="")
    received.status = status

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            received.bodies.append(json.loads(self.rfile.read(length)))
            received.content_types.append(self.headers.get("Content-Type", ""))
            self.send_response(received.status)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    received.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/secret-token"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Mailbox:
    """What a local SMTP server received, and its port."""

    port: int
    messages: list[Message] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)

    def bodies(self) -> list[str]:
        texts = [str(m.get_payload(decode=True).decode()) for m in self.messages]  # type: ignore[union-attr]
        return [text.replace("\r\n", "\n").rstrip("\n") for text in texts]


@contextmanager
def smtp_server(password: str | None = None) -> Iterator[Mailbox]:
    """An SMTP server on 127.0.0.1 (aiosmtpd); with ``password``, it wants a login (user ``lab``)."""
    port = free_port()
    box = Mailbox(port=port)

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            box.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
            box.messages.append(message_from_bytes(envelope.content))
            return "250 OK"

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult  # noqa: PLC0415

        login = (auth_data.login.decode(), auth_data.password.decode())
        box.logins.append(login)
        return AuthResult(success=login == ("lab", password))

    options: dict[str, Any] = {}
    if password is not None:
        options = {"authenticator": authenticate, "auth_require_tls": False}
    controller = Controller(Handler(), hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (closed again at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    """Polls ``predicate`` until it is true or ``timeout`` seconds passed; returns its last value."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
