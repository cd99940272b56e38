"""Who may read the operator endpoints: loopback addresses and HTTP basic auth, for Flower and the exporter.

Both endpoints follow one rule: a loopback address may serve without
credentials (only local users reach it); any other address needs
``user:password`` pairs from the environment, never from a command line.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress


class EndpointConfigError(ValueError):
    """Credentials that do not parse, or a public address without them."""


def is_loopback(address: str) -> bool:
    # "" binds every interface, like 0.0.0.0.
    if address in ("localhost", ""):
        return address == "localhost"
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def parse_basic_auth(value: str | None, env: str) -> list[tuple[str, str]]:
    """``user:password[,user:password...]`` as pairs; [] when unset. A password may contain ':'."""
    value = (value or "").strip()
    if not value:
        return []
    pairs = [pair.split(":", 1) for pair in value.split(",")]
    if any(len(pair) != 2 or not pair[0] or not pair[1] for pair in pairs):
        raise EndpointConfigError(f"{env} must be user:password[,user:password...]")
    return [(user, password) for user, password in pairs]


def require_credentials(what: str, address: str, credentials: list, env: str) -> None:
    if not credentials and not is_loopback(address):
        raise EndpointConfigError(
            f"refusing to start {what} on non-loopback address {address!r} without credentials: "
            f"set {env}=user:password")


def authorized(header: str | None, credentials: list[tuple[str, str]]) -> bool:
    """Whether an ``Authorization: Basic …`` header carries one of the pairs.

    Every pair is compared in full with ``hmac.compare_digest``, so the time
    taken says nothing about which user or how much of a password matched.
    """
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, sep, password = base64.b64decode(encoded.strip(), validate=True).partition(b":")
    except (binascii.Error, ValueError):
        return False
    if not sep:
        return False
    matched = False
    for known_user, known_password in credentials:
        same_user = hmac.compare_digest(user, known_user.encode())
        same_password = hmac.compare_digest(password, known_password.encode())
        matched |= same_user & same_password
    return matched
