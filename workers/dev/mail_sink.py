"""A real SMTP server that keeps what it receives: the mail peer of the tests and the demo.

Dev only. The e-mail tasks speak SMTP to whatever ``SMTP_URL`` names; in the tests and
under ``make run`` that is this sink, so the code under test goes through a real
SMTP dialogue (EHLO, MAIL, RCPT, DATA and the server's reply codes) instead of a
mocked ``smtplib``. The sink listens on 127.0.0.1 only, on a port the kernel picks,
keeps every accepted message in memory and, given a ``maildir``, also as ``.eml``
files a developer can open in a mail client. Tests program the next replies
(``fail_next(451, ...)``) to drive the retry and bounce paths with the codes a real
relay would send.
"""
from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import threading
from collections import deque
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller

from workers.dev.inbox import Inbox

HOST = "127.0.0.1"
# aiosmtpd logs every SMTP command at INFO, recipient addresses included: personal
# data that must not reach `make run`'s output or its logs.
logging.getLogger("mail.log").setLevel(logging.WARNING)
# Bigger than any mail this system sends; a runaway sender gets 552 instead of eating memory.
DATA_SIZE_LIMIT = 10 * 1024 * 1024


@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    message: EmailMessage


class _EphemeralPortController(Controller):
    """Controller bound to port 0, so the kernel picks a free port and no other process can
    take it between choosing and binding. The base class's ready check connects to
    ``self.port``, so the real port is read back from the listening socket first."""

    def _trigger_server(self):
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class _Handler:
    def __init__(self, sink: MailSink):
        self.sink = sink

    async def handle_DATA(self, server, session, envelope) -> str:
        reply = self.sink._accept(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
        if self.sink.reply_delay > 0:
            await asyncio.sleep(self.sink.reply_delay)  # other connections are served meanwhile
        return reply


class MailSink:
    """An SMTP server on 127.0.0.1 that stores every message it accepts."""

    def __init__(self, maildir: Path | None = None, reply_delay: float = 0.0):
        self.maildir = Path(maildir) if maildir is not None else None
        # Seconds between keeping a message and answering its DATA, as a slow relay does: a
        # sender killed meanwhile handed the message over without learning so (the chaos
        # test's at-most-one-duplicate window). The message is stored before the wait.
        self.reply_delay = reply_delay
        self._inbox: Inbox[ReceivedMail] = Inbox("message(s)", self.maildir, ".eml")
        self.messages = self._inbox.items
        self._replies: deque[str] = deque()
        self._lock = threading.Lock()
        self._controller: _EphemeralPortController | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> MailSink:
        if self._controller is not None:
            raise RuntimeError("the mail sink is already running")
        self._inbox.open()
        controller = _EphemeralPortController(
            _Handler(self), hostname=HOST, port=0, server_hostname="mail-sink.localhost",
            data_size_limit=DATA_SIZE_LIMIT)
        controller.start()
        self._controller = controller
        return self

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def __enter__(self) -> MailSink:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._controller is None:
            raise RuntimeError("the mail sink is not running")
        return self._controller.port

    @property
    def url(self) -> str:
        return f"smtp://{HOST}:{self.port}"

    # -- test controls ---------------------------------------------------------------------

    def fail_next(self, code: int, text: str, times: int = 1) -> None:
        """Answer the next ``times`` DATA commands with ``code text`` (say ``451``,
        ``"4.3.0 Try again later"``) instead of 250; those messages are not stored."""
        if not 400 <= code <= 599:
            raise ValueError(f"a failure reply needs a 4xx or 5xx code, not {code}")
        if times < 1:
            raise ValueError("times must be at least 1")
        # One line only: a newline in the text would inject a second reply into the dialogue.
        reply = f"{code} {' '.join(text.split())}".rstrip()
        with self._lock:
            self._replies.extend([reply] * times)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedMail]:
        """Block until at least ``count`` messages arrived; return all received so far."""
        return self._inbox.wait_for(count, timeout)

    def clear(self) -> None:
        """Forget the received messages and any programmed replies (files stay on disk)."""
        self._inbox.clear()
        with self._lock:
            self._replies.clear()

    # -- server side (runs on the controller's thread) --------------------------------------

    def _accept(self, mail_from: str, rcpt_tos: list[str], raw: bytes) -> str:
        with self._lock:
            if self._replies:
                return self._replies.popleft()
        message = email.message_from_bytes(raw, policy=email.policy.default)
        self._inbox.add(ReceivedMail(mail_from, rcpt_tos, raw, message), raw)
        return "250 2.0.0 OK: queued"
