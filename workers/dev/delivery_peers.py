"""The dev runner's delivery endpoints: an SMTP sink, a Web Push service and the keys they need.

Dev only (``make run``). For each unset setting:

- SMTP_URL: an SMTP server on 127.0.0.1 writes every email as a ``.eml`` file
  under ``$DATA_DIR/mail/`` (0600 files in a 0700 directory).
- VAPID_PRIVATE_KEY: a P-256 key generated once into ``$DATA_DIR/vapid/private.pem``
  (0600); the setting names the file, so the key never travels in the environment.
- UNSUBSCRIBE_SECRET: 32 random bytes generated once into ``$DATA_DIR/unsubscribe_secret``.

A Web Push service on 127.0.0.1 (``PushReceiver``) is always started: it decrypts
each push with the subscription's private key and writes it under
``$DATA_DIR/push/``; the demo subscribes a user to it. Both servers live in the
runner's process and stop with it.
"""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from workers.dev.mail_sink import MailSink
from workers.private_files import generated_once
from workers.dev.push_receiver import PushReceiver


@dataclass
class DeliveryPeers:
    mail_dir: Path | None = None
    push_dir: Path | None = None
    mail_sink: MailSink | None = None
    push_receiver: PushReceiver | None = None
    started: list[str] = field(default_factory=list)

    def stop(self) -> None:
        for server in (self.mail_sink, self.push_receiver):
            if server is not None:
                server.stop()


_current: DeliveryPeers | None = None


def current() -> DeliveryPeers | None:
    """The peers this process started (the demo subscribes its user to ``push_receiver``)."""
    return _current


def _vapid_pem() -> bytes:
    from py_vapid import Vapid02

    key = Vapid02()
    key.generate_keys()
    return key.private_pem()


def start(data_dir: Path) -> DeliveryPeers:
    """Start what is missing and put its settings in ``os.environ`` for the children."""
    global _current
    peers = DeliveryPeers()
    if not os.environ.get("SMTP_URL"):
        peers.mail_dir = data_dir / "mail"
        peers.mail_sink = MailSink(maildir=peers.mail_dir).start()
        os.environ["SMTP_URL"] = peers.mail_sink.url
        peers.started.append("SMTP sink")
    if not os.environ.get("VAPID_PRIVATE_KEY"):
        (data_dir / "vapid").mkdir(mode=0o700, exist_ok=True)
        os.environ["VAPID_PRIVATE_KEY"] = str(generated_once(data_dir / "vapid" / "private.pem", _vapid_pem))
    if not os.environ.get("UNSUBSCRIBE_SECRET"):
        path = generated_once(data_dir / "unsubscribe_secret", lambda: secrets.token_urlsafe(32).encode())
        os.environ["UNSUBSCRIBE_SECRET"] = path.read_text().strip()
    peers.push_dir = data_dir / "push"
    peers.push_receiver = PushReceiver(store_dir=peers.push_dir).start()
    peers.started.append("Web Push receiver")
    _current = peers
    return peers
