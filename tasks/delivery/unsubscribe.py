"""Signed one-click unsubscribe tokens for the ``List-Unsubscribe`` header (RFC 2369, RFC 8058).

The web tier verifies a token with ``verify(token)`` (needs only UNSUBSCRIBE_SECRET)
and then writes ``notification_preferences`` (one type) or
``notification_settings.email_enabled = false`` (scope ``all``). A token names a
user and a scope and nothing else, so it cannot be turned into another user's.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json

import settings


class BadToken(ValueError):
    """The token was not signed with UNSUBSCRIBE_SECRET, or does not parse."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _secret(secret: str | None) -> bytes:
    secret = secret or settings.current().unsubscribe_secret
    if not secret:
        raise BadToken("UNSUBSCRIBE_SECRET is not set")
    return secret.encode()


def sign(user_id: int, scope: str, secret: str | None = None) -> str:
    """``scope``: a notification type (``like``), or ``all`` for every email."""
    body = _b64(json.dumps({"u": user_id, "s": scope}, separators=(",", ":")).encode())
    mac = hmac.new(_secret(secret), body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def verify(token: str, secret: str | None = None) -> tuple[int, str]:
    """(user_id, scope) of a token this deployment signed; ``BadToken`` otherwise."""
    body, _, mac = token.partition(".")
    if not body or not mac or len(token) > 512:
        raise BadToken("malformed token")
    expected = hmac.new(_secret(secret), body.encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(expected, _unb64(mac)):
            raise BadToken("bad signature")
        claims = json.loads(_unb64(body))
        return int(claims["u"]), str(claims["s"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BadToken("malformed token") from exc
