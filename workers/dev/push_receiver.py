"""A local Web Push service: the push peer of the tests and the demo.

Dev only. In production a browser vendor's push service (FCM, Mozilla autopush, ...)
receives the notifications the workers send; here this receiver plays that part, so
the code under test goes through the real protocol: it hands out browser-style
subscriptions (an endpoint plus P-256 and auth keys), checks each request the way a
push service does (RFC 8030 headers, RFC 8292 VAPID, RFC 8188/8291 aes128gcm) and
decrypts the payload with the subscription's private key, as the browser would. A
test therefore sees exactly what a user's browser would show, and a broken signature
or encryption fails loudly instead of passing a mock. ``respond()`` programs the
answers real services send (410 Gone for a dead subscription, 429 with
``Retry-After``, 5xx) to drive the cleanup and retry paths.
"""
from __future__ import annotations

import base64
import json
import logging
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import http_ece
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from workers.dev.inbox import Inbox

HOST = "127.0.0.1"
MAX_PAYLOAD = 4096  # RFC 8291: a push message body is at most 4096 octets
MAX_DRAIN = 1024 * 1024  # read at most this much of an oversized body before answering 413
MAX_VAPID_LIFETIME = 24 * 60 * 60  # RFC 8292 section 2: exp no more than 24 hours ahead
TOPIC = re.compile(r"^[A-Za-z0-9_-]{1,32}$")  # RFC 8030 section 5.4
URGENCIES = {"very-low", "low", "normal", "high"}  # RFC 8030 section 5.3

log = logging.getLogger("workers.dev.push_receiver")


@dataclass
class ReceivedPush:
    endpoint: str
    topic: str | None
    urgency: str | None
    ttl: int
    payload: bytes

    def json(self):
        return json.loads(self.payload)


@dataclass
class _Subscription:
    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes


class _Rejected(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PushReceiver:
    """A Web Push service on 127.0.0.1 that decrypts and keeps every valid push."""

    def __init__(self, store_dir: Path | None = None):
        self.store_dir = Path(store_dir) if store_dir is not None else None
        self._inbox: Inbox[ReceivedPush] = Inbox("push(es)", self.store_dir, ".json")
        self.pushes = self._inbox.items
        self.rejected: list[str] = []
        self._subscriptions: dict[str, _Subscription] = {}
        self._responses: dict[str, deque[tuple[int, dict]]] = {}
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> PushReceiver:
        if self._server is not None:
            raise RuntimeError("the push receiver is already running")
        self._inbox.open()
        # Port 0: the kernel picks a free port and no other process can take it meanwhile.
        self._server = _Server((HOST, 0), _Handler, receiver=self)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="push-receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            self._thread.join()

    def __enter__(self) -> PushReceiver:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the push receiver is not running")
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    # -- test controls ---------------------------------------------------------------------

    def new_subscription(self) -> dict:
        """Register an endpoint and return what a browser's ``PushSubscription.toJSON()`` gives."""
        private_key = ec.generate_private_key(ec.SECP256R1())
        auth = secrets.token_bytes(16)
        endpoint = f"{self.base_url}/push/{secrets.token_urlsafe(24)}"
        public = private_key.public_key().public_bytes(serialization.Encoding.X962,
                                                       serialization.PublicFormat.UncompressedPoint)
        with self._lock:
            self._subscriptions[endpoint] = _Subscription(endpoint, private_key, auth)
        return {"endpoint": endpoint, "keys": {"p256dh": _b64url(public), "auth": _b64url(auth)}}

    def respond(self, endpoint: str, status: int, times: int = 1, headers: dict | None = None) -> None:
        """Answer the next ``times`` pushes to ``endpoint`` with ``status`` (and ``headers``,
        say ``{"Retry-After": "1"}``) instead of accepting them; those are not stored."""
        with self._lock:
            if endpoint not in self._subscriptions:
                raise KeyError(f"not an endpoint of this receiver: {endpoint}")
            self._responses.setdefault(endpoint, deque()).extend([(status, dict(headers or {}))] * times)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedPush]:
        """Block until at least ``count`` pushes arrived; return all received so far."""
        return self._inbox.wait_for(count, timeout)

    def clear(self) -> None:
        """Forget received and rejected pushes and programmed responses; subscriptions stay."""
        self._inbox.clear()
        with self._lock:
            self.rejected.clear()
            self._responses.clear()

    # -- server side (runs on the request threads) ------------------------------------------

    def _handle(self, endpoint: str, headers, body: bytes, length: int) -> tuple[int, dict]:
        with self._lock:
            subscription = self._subscriptions.get(endpoint)
            programmed = self._responses.get(endpoint)
            if subscription is not None and programmed:
                return programmed.popleft()
        if subscription is None:
            return 404, {}
        try:
            push = self._verify(subscription, headers, body, length)
        except _Rejected as rejected:
            with self._lock:
                self.rejected.append(f"{rejected.status} {endpoint}: {rejected.reason}")
            return rejected.status, {}
        self._inbox.add(push, self._record(push))
        return 201, {"Location": f"{self.base_url}/message/{secrets.token_urlsafe(16)}"}

    def _verify(self, subscription: _Subscription, headers, body: bytes, length: int) -> ReceivedPush:
        if length > MAX_PAYLOAD:
            raise _Rejected(413, f"body of {length} bytes exceeds {MAX_PAYLOAD}")
        ttl = headers.get("TTL", "")
        if not _is_number(ttl):
            raise _Rejected(400, f"missing or invalid TTL header: {ttl!r}")
        topic, urgency = headers.get("Topic"), headers.get("Urgency")
        if topic is not None and not TOPIC.match(topic):
            raise _Rejected(400, f"invalid Topic header: {topic!r}")
        if urgency is not None and urgency not in URGENCIES:
            raise _Rejected(400, f"invalid Urgency header: {urgency!r}")
        _check_vapid(headers.get("Authorization"), self.base_url)
        payload = b""
        # A push without a body is legal (a "tickle"); a body must be RFC 8291 encrypted.
        if body:
            if headers.get("Content-Encoding", "").lower() != "aes128gcm":
                raise _Rejected(400, f"unsupported Content-Encoding: {headers.get('Content-Encoding')!r}")
            try:
                payload = http_ece.decrypt(body, private_key=subscription.private_key,
                                           auth_secret=subscription.auth, version="aes128gcm")
            except Exception as error:  # http_ece raises several types for a bad body
                raise _Rejected(400, f"payload decryption failed: {error!r}") from None
        return ReceivedPush(subscription.endpoint, topic, urgency, int(ttl), payload)

    @staticmethod
    def _record(push: ReceivedPush) -> bytes:
        record = {"endpoint": push.endpoint, "topic": push.topic, "urgency": push.urgency, "ttl": push.ttl,
                  "received_at": time.time()}
        try:
            record["payload"] = push.payload.decode("utf-8")
        except UnicodeDecodeError:
            record["payload_base64"] = base64.b64encode(push.payload).decode("ascii")
        return json.dumps(record, indent=2).encode("utf-8")


def _check_vapid(authorization: str | None, audience: str) -> None:
    """Verify an RFC 8292 ``Authorization: vapid t=<JWT>, k=<key>`` header as a push service does."""
    if not authorization:
        raise _Rejected(401, "missing Authorization header")
    scheme, _, params = authorization.partition(" ")
    if scheme.lower() != "vapid":
        raise _Rejected(401, f"Authorization scheme is {scheme!r}, not vapid")
    # pywebpush writes "t=..,k=.." and the RFC "t=.., k=..": split on commas, then trim.
    fields = dict(part.strip().partition("=")[::2] for part in params.split(","))
    token, key = fields.get("t"), fields.get("k")
    if not token or not key:
        raise _Rejected(401, "Authorization lacks t= or k=")
    try:
        header_b64, claims_b64, signature_b64 = token.split(".")
        header = json.loads(_unb64url(header_b64))
        claims = json.loads(_unb64url(claims_b64))
        signature = _unb64url(signature_b64)
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise ValueError("JWT header and claims must be JSON objects")
        public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), _unb64url(key))
    except ValueError as error:  # bad base64, JSON or point; binascii.Error is a ValueError
        raise _Rejected(401, f"malformed VAPID token or key: {error}") from None
    if header.get("alg") != "ES256" or len(signature) != 64:
        raise _Rejected(401, f"VAPID token is not ES256: {header!r}")
    # A JWS carries r||s raw; cryptography verifies the DER form.
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        public_key.verify(der, f"{header_b64}.{claims_b64}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise _Rejected(401, "VAPID signature does not verify with key k") from None
    if claims.get("aud") != audience:
        raise _Rejected(401, f"VAPID aud is {claims.get('aud')!r}, expected {audience!r}")
    exp, now = claims.get("exp"), time.time()
    if not isinstance(exp, int) or exp <= now:
        raise _Rejected(401, f"VAPID token expired or without exp: {exp!r}")
    if exp > now + MAX_VAPID_LIFETIME + 60:  # a minute of clock skew
        raise _Rejected(401, f"VAPID exp {exp} is more than 24 hours ahead")
    if not str(claims.get("sub", "")).startswith(("mailto:", "https:")):
        raise _Rejected(401, f"VAPID sub must be a mailto: or https: URL, got {claims.get('sub')!r}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, handler, receiver: PushReceiver):
        self.receiver = receiver
        super().__init__(address, handler)

    def handle_error(self, request, client_address):
        # The base class prints the traceback to stderr; keep it in the logs instead.
        log.exception("push receiver: error serving %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self):
        receiver = self.server.receiver
        length_header = self.headers.get("Content-Length", "0")
        if not _is_number(length_header):
            with receiver._lock:
                receiver.rejected.append(f"411 {self.path}: Content-Length {length_header!r}")
            return self._reply(411, {})
        length = int(length_header)
        # Keep at most one byte more than a push may have (enough to tell it is too big), and
        # drain, boundedly, the rest: a client answered before it finished sending would see a
        # connection reset instead of the status. HTTP/1.0 then closes the connection.
        body = self.rfile.read(min(length, MAX_PAYLOAD + 1))
        self.rfile.read(min(length - len(body), MAX_DRAIN))
        if not self.path.startswith("/push/"):
            return self._reply(404, {})
        self._reply(*receiver._handle(f"{receiver.base_url}{self.path}", self.headers, body, length))

    def _reply(self, status: int, headers: dict) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, str(value))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format, *args):
        pass  # quiet: the tests' output is for the tests
