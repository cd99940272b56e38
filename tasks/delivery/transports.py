"""SMTP and Web Push hand-over, each reply classified as sent, temporary or permanent.

SMTP: one connection per worker thread, reused across tasks (a TLS handshake and
EHLO per email would cost more than the email), checked with NOOP when idle, and
dropped on any error. STARTTLS whenever the server offers it; ``smtps://`` is
TLS from the start. Every network call has a timeout.

Web Push: ``pywebpush`` encrypts the payload (RFC 8291, aes128gcm) and signs a
VAPID JWT (RFC 8292). 404/410 mean the subscription is gone; 429 and 5xx are
temporary and honour ``Retry-After``; other 4xx are permanent.
"""
from __future__ import annotations

import email.policy
import smtplib
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import Message
from email.utils import parsedate_to_datetime
from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tasks.delivery.errors import NotConfigured, PermanentFailure, TemporaryFailure

NETWORK_TIMEOUT = 20.0
# CRLF line ends, and RFC 5322's 998-character line limit: at 78 a long List-Unsubscribe
# URL would be folded or encoded, which mail clients do not parse. compat32, like the
# messages rendering.py builds: flattening re-parses nothing.
WIRE_POLICY = email.policy.compat32.clone(linesep="\r\n", max_line_length=998)
IDLE_CHECK_AFTER = 30.0  # seconds idle before a reused SMTP connection is NOOP-checked


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    username: str | None
    password: str | None
    implicit_tls: bool

    @classmethod
    def parse(cls, url: str) -> SmtpTarget:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise NotConfigured("SMTP_URL must look like smtp://user:password@host:587 or smtps://host:465")
        implicit = parts.scheme == "smtps"
        return cls(host=parts.hostname, port=parts.port or (465 if implicit else 587),
                   username=unquote(parts.username) if parts.username else None,
                   password=unquote(parts.password) if parts.password else None, implicit_tls=implicit)


class _Connections(threading.local):
    def __init__(self):
        self.smtp: smtplib.SMTP | None = None
        self.target: SmtpTarget | None = None
        self.last_used = 0.0


_local = _Connections()


def _connect(target: SmtpTarget) -> smtplib.SMTP:
    context = ssl.create_default_context()
    if target.implicit_tls:
        client: smtplib.SMTP = smtplib.SMTP_SSL(target.host, target.port, timeout=NETWORK_TIMEOUT, context=context)
    else:
        client = smtplib.SMTP(target.host, target.port, timeout=NETWORK_TIMEOUT)
    client.ehlo()
    if not target.implicit_tls and client.has_extn("starttls"):
        client.starttls(context=context)
        client.ehlo()
    if target.username:
        client.login(target.username, target.password or "")
    return client


def drop_connection() -> None:
    client, _local.smtp = _local.smtp, None
    if client is not None:
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            client.close()


def _connection(target: SmtpTarget) -> smtplib.SMTP:
    if _local.smtp is not None and _local.target == target:
        if time.monotonic() - _local.last_used < IDLE_CHECK_AFTER:
            return _local.smtp
        try:
            if _local.smtp.noop()[0] == 250:
                return _local.smtp
        except (smtplib.SMTPException, OSError):
            pass
    drop_connection()
    _local.smtp, _local.target = _connect(target), target
    return _local.smtp


def _classify(code: int, reply: bytes | str) -> Exception:
    text = (reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply))[:400]
    summary = f"{code} {text}"
    return TemporaryFailure(summary) if 400 <= code < 500 else PermanentFailure(summary)


def send_email(url: str, message: Message) -> str:
    """Hand one message to the SMTP server; returns its reply to DATA ("250 2.0.0 Ok: queued as …")."""
    target = SmtpTarget.parse(url)
    sender, recipient = message["From"], message["To"]
    for attempt in (1, 2):
        try:
            client = _connection(target)
            code, reply = client.mail(_address(sender))
            if code != 250:
                raise _classify(code, reply)
            code, reply = client.rcpt(_address(recipient))
            if code not in (250, 251):
                raise _classify(code, reply)
            code, reply = client.data(message.as_bytes(policy=WIRE_POLICY))
            if code != 250:
                raise _classify(code, reply)
            _local.last_used = time.monotonic()
            return f"{code} {reply.decode(errors='replace')}"[:500]
        except smtplib.SMTPServerDisconnected as exc:
            drop_connection()
            if attempt == 2:
                raise TemporaryFailure(f"connection lost: {exc}") from None
        except (TemporaryFailure, PermanentFailure):
            _reset()
            raise
        except smtplib.SMTPResponseException as exc:
            drop_connection()
            raise _classify(exc.smtp_code, exc.smtp_error) from None
        except (smtplib.SMTPException, OSError) as exc:
            drop_connection()
            raise TemporaryFailure(f"{type(exc).__name__}: {exc}"[:400]) from None
    raise AssertionError("unreachable")


def _reset() -> None:
    """After a refused transaction the session may go on after RSET; if not, start afresh."""
    try:
        if _local.smtp is not None and _local.smtp.rset()[0] == 250:
            return
    except (smtplib.SMTPException, OSError):
        pass
    drop_connection()


def _address(header: str) -> str:
    from email.utils import parseaddr

    return parseaddr(header)[1]


# --- Web Push -------------------------------------------------------------------------


@dataclass(frozen=True)
class PushResult:
    status: str          # "sent" | "gone" (404/410) | "refused" (other 4xx)
    location: str | None = None
    reply: str | None = None


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: either delta-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


@lru_cache(maxsize=4)
def load_vapid(value: str):
    """The VAPID signing key from VAPID_PRIVATE_KEY: a PEM file's path, PEM text, or base64url DER/raw.

    Parsed once per process. A path that does not exist is an error here: py_vapid's
    own ``from_file`` would quietly generate a new key, and every subscription made
    against the old public key would then be refused.
    """
    from py_vapid import Vapid02

    text = value.strip()
    if text.startswith("-----BEGIN"):
        return Vapid02.from_pem(text.encode())
    if "/" in text or text.endswith(".pem"):
        path = Path(text)
        if not path.is_file():
            raise NotConfigured(f"VAPID_PRIVATE_KEY names a file that does not exist: {path}")
        return Vapid02.from_pem(path.read_bytes().strip())
    return Vapid02.from_string(text)


def send_push(subscription: dict, payload: str, *, vapid_key, subject: str, topic: str, urgency: str,
              ttl: int) -> PushResult:
    """One encrypted push to one subscription (``{"endpoint", "keys": {"p256dh", "auth"}}``)."""
    from pywebpush import WebPushException, webpush

    try:
        response = webpush(subscription_info=subscription, data=payload, vapid_private_key=vapid_key,
                           vapid_claims={"sub": subject}, ttl=ttl, timeout=NETWORK_TIMEOUT,
                           headers={"Topic": topic, "Urgency": urgency})
    except WebPushException as exc:
        response = exc.response
        if response is None:
            raise TemporaryFailure(f"push service unreachable: {type(exc).__name__}") from None
    except (OSError, ValueError) as exc:  # requests' connection errors are OSErrors
        raise TemporaryFailure(f"push service unreachable: {type(exc).__name__}") from None
    status = response.status_code
    if status in (200, 201, 202):
        return PushResult("sent", response.headers.get("Location"))
    if status in (404, 410):
        return PushResult("gone")
    reply = f"{status} {response.reason or ''}".strip()
    if status == 429 or status >= 500:
        raise TemporaryFailure(reply, retry_after_seconds(response.headers.get("Retry-After")))
    raise PermanentFailure(reply)
