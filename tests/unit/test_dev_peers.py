"""The dev protocol peers: the SMTP sink and the Web Push receiver, driven by real clients
(smtplib, pywebpush), so the delivery tests that lean on them stand on proven ground."""
from __future__ import annotations

import json
import smtplib
import stat
import time
from email.message import EmailMessage

import py_vapid
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from py_vapid.jwt import sign as sign_jwt
from py_vapid.utils import b64urlencode
from pywebpush import WebPusher, WebPushException, webpush

from workers.dev.mail_sink import MailSink
from workers.dev.push_receiver import PushReceiver

# -- mail sink -----------------------------------------------------------------------------


@pytest.fixture
def sink(tmp_path):
    with MailSink(maildir=tmp_path / "mail") as running:
        yield running


def send(sink: MailSink, subject: str = "Welcome", body: str = "plain body") -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "noreply@example.com", "ada@example.com", subject
    message.set_content(body)
    message.add_alternative(f"<p>{body}</p>", subtype="html")
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as client:
        client.send_message(message)
    return message


def test_a_multipart_message_arrives_whole(sink):
    assert sink.url == f"smtp://127.0.0.1:{sink.port}"
    send(sink, subject="Hello Ada", body="first line")
    [mail] = sink.wait_for(1)
    assert mail.mail_from == "noreply@example.com" and mail.rcpt_tos == ["ada@example.com"]
    assert mail.message["Subject"] == "Hello Ada"
    assert mail.message.get_body(("plain",)).get_content().strip() == "first line"
    assert mail.message.get_body(("html",)).get_content().strip() == "<p>first line</p>"
    assert b"Hello Ada" in mail.raw


def test_each_message_is_written_to_the_maildir_privately(sink, tmp_path):
    send(sink, subject="one")
    send(sink, subject="two")
    sink.wait_for(2)
    maildir = tmp_path / "mail"
    assert stat.S_IMODE(maildir.stat().st_mode) == 0o700
    files = sorted(maildir.iterdir())
    assert [file.suffix for file in files] == [".eml", ".eml"]  # no temporary file left behind
    assert all(stat.S_IMODE(file.stat().st_mode) == 0o600 for file in files)
    assert [b"Subject: one" in files[0].read_bytes(), b"Subject: two" in files[1].read_bytes()] == [True, True]


@pytest.mark.parametrize("code, text", [(451, "4.3.0 Try again later"), (550, "5.1.1 No such user")])
def test_a_programmed_failure_answers_data_then_the_next_send_succeeds(sink, code, text):
    sink.fail_next(code, text, times=2)
    for _ in range(2):
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(sink)
        assert refused.value.smtp_code == code and refused.value.smtp_error.decode() == text
    assert sink.messages == []
    send(sink, subject="third time")
    assert [mail.message["Subject"] for mail in sink.wait_for(1)] == ["third time"]


def test_mail_over_ten_megabytes_is_refused(sink):
    with pytest.raises(smtplib.SMTPResponseException) as refused:
        send(sink, body="x" * (10 * 1024 * 1024))
    assert refused.value.smtp_code == 552
    assert sink.messages == []


def test_wait_for_says_how_many_arrived(sink):
    send(sink)
    with pytest.raises(TimeoutError, match="expected 2 message.*1 arrived"):
        sink.wait_for(2, timeout=0.2)
    sink.clear()
    assert sink.messages == []


# -- push receiver -------------------------------------------------------------------------


@pytest.fixture
def receiver(tmp_path):
    with PushReceiver(store_dir=tmp_path / "push") as running:
        yield running


@pytest.fixture(scope="module")
def vapid():
    key = py_vapid.Vapid02()
    key.generate_keys()
    return key


def push(subscription, vapid, data='{"title": "hi"}', **kwargs):
    # pywebpush writes "aud" into the claims dict it is given: a fresh dict per send.
    return webpush(subscription_info=subscription, data=data, vapid_private_key=vapid,
                   vapid_claims={"sub": "mailto:ops@example.com"}, ttl=60, **kwargs)


@pytest.mark.parametrize("key_form", ["object", "der", "pem"])
def test_pywebpush_delivers_the_exact_payload_and_topic(receiver, vapid, tmp_path, key_form):
    key = {"object": vapid,
           "der": b64urlencode(vapid.private_key.private_bytes(
               serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())),
           "pem": py_vapid.Vapid02.from_pem(vapid.private_pem())}[key_form]
    subscription = receiver.new_subscription()
    response = push(subscription, key, headers={"Topic": "abc", "Urgency": "high"})
    assert response.status_code == 201 and response.headers["Location"].startswith(receiver.base_url)
    [received] = receiver.wait_for(1)
    assert received.endpoint == subscription["endpoint"]
    assert (received.payload, received.topic, received.urgency, received.ttl) == (b'{"title": "hi"}', "abc", "high", 60)
    assert received.json() == {"title": "hi"}
    [stored] = (tmp_path / "push").iterdir()
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600 and stored.suffix == ".json"
    assert '"payload": "{\\"title\\": \\"hi\\"}"' in stored.read_text() and '"topic": "abc"' in stored.read_text()


def test_a_programmed_response_is_answered_and_nothing_is_stored(receiver, vapid):
    subscription = receiver.new_subscription()
    receiver.respond(subscription["endpoint"], 410)
    receiver.respond(subscription["endpoint"], 429, headers={"Retry-After": "1"})
    with pytest.raises(WebPushException) as gone:
        push(subscription, vapid)
    assert gone.value.response.status_code == 410
    with pytest.raises(WebPushException) as slow_down:
        push(subscription, vapid)
    assert slow_down.value.response.status_code == 429 and slow_down.value.retry_after == "1"
    assert receiver.pushes == []
    push(subscription, vapid)
    assert len(receiver.wait_for(1)) == 1


def signed(signer, claims: dict, key_of=None, forge: dict | None = None) -> dict:
    """An RFC 8292 Authorization header: ``claims`` signed by ``signer``, naming ``key_of``'s
    public key (the signer's by default); ``forge`` swaps the claims after signing."""
    token = sign_jwt(claims, signer.private_key)
    if forge is not None:
        header, _, signature = token.split(".")
        token = f"{header}.{b64urlencode(json.dumps(forge).encode())}.{signature}"
    public = (key_of or signer).public_key.public_bytes(serialization.Encoding.X962,
                                                        serialization.PublicFormat.UncompressedPoint)
    return {"Authorization": f"vapid t={token}, k={b64urlencode(public)}"}


@pytest.mark.parametrize("case, reason", [
    ("absent", "missing Authorization"),
    ("other key", "signature does not verify"),
    ("forged claims", "signature does not verify"),
    ("wrong aud", "aud is 'https://push.example.com'"),
    ("expired", "expired"),
    ("too long", "more than 24 hours"),
    ("no sub", "sub must be"),
    ("webpush scheme", "not vapid"),
])
def test_a_request_without_a_valid_vapid_token_is_refused(receiver, vapid, case, reason):
    subscription = receiver.new_subscription()
    good = {"aud": receiver.base_url, "exp": int(time.time()) + 3600, "sub": "mailto:ops@example.com"}
    other = py_vapid.Vapid02()
    other.generate_keys()
    headers = {
        "absent": {},
        "other key": signed(other, good, key_of=vapid),
        "forged claims": signed(vapid, good, forge={**good, "sub": "mailto:mallory@example.com"}),
        "wrong aud": signed(vapid, {**good, "aud": "https://push.example.com"}),
        "expired": signed(vapid, {**good, "exp": int(time.time()) - 1}),
        "too long": signed(vapid, {**good, "exp": int(time.time()) + 3 * 86400}),
        "no sub": signed(vapid, {"aud": good["aud"], "exp": good["exp"]}),
        # The pre-RFC draft form that py_vapid.Vapid01 still produces.
        "webpush scheme": py_vapid.Vapid01(vapid.private_key).sign(good),
    }[case]
    response = WebPusher(subscription).send('{"title": "hi"}', headers, ttl=60)
    assert response.status_code == 401
    assert receiver.pushes == []
    [rejection] = receiver.rejected
    assert rejection.startswith("401 ") and reason in rejection


def test_an_unknown_endpoint_is_404_and_an_oversized_payload_413(receiver, vapid):
    assert requests.post(f"{receiver.base_url}/push/no-such-token", data=b"x", timeout=10).status_code == 404
    with pytest.raises(WebPushException) as too_big:
        push(receiver.new_subscription(), vapid, data="x" * 5000)
    assert too_big.value.response.status_code == 413
    assert receiver.pushes == [] and receiver.rejected[0].startswith("413 ")


def test_missing_ttl_and_plaintext_bodies_are_refused(receiver, vapid):
    subscription = receiver.new_subscription()
    auth = signed(vapid, {"aud": receiver.base_url, "exp": int(time.time()) + 3600, "sub": "mailto:ops@example.com"})
    no_ttl = requests.post(subscription["endpoint"], data=b"", headers=auth, timeout=10)
    plaintext = requests.post(subscription["endpoint"], data=b'{"title": "hi"}', timeout=10,
                              headers={**auth, "TTL": "60"})
    assert (no_ttl.status_code, plaintext.status_code) == (400, 400)
    assert len(receiver.rejected) == 2
    assert "missing or invalid TTL header" in receiver.rejected[0]
    assert "unsupported Content-Encoding" in receiver.rejected[1]
