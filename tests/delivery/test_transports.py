"""Settings a send cannot work with are a typed, permanent error naming the setting, never a guess."""
from __future__ import annotations

import pytest

from tasks.delivery import transports
from tasks.delivery.errors import NotConfigured


@pytest.mark.parametrize("url", ["http://mail.example:25", "smtp://", "mail.example:587"])
def test_an_smtp_url_that_does_not_parse_is_not_configured(url):
    with pytest.raises(NotConfigured, match="SMTP_URL"):
        transports.SmtpTarget.parse(url)


def test_smtp_url_parts_and_default_ports():
    target = transports.SmtpTarget.parse("smtp://ops%40x:p%2Fw@mail.example")
    assert (target.host, target.port, target.username, target.password, target.implicit_tls) == (
        "mail.example", 587, "ops@x", "p/w", False)
    assert transports.SmtpTarget.parse("smtps://mail.example").port == 465


def test_a_vapid_key_path_that_does_not_exist_is_an_error_not_a_new_key(tmp_path):
    missing = tmp_path / "vapid" / "private.pem"
    with pytest.raises(NotConfigured, match="does not exist"):
        transports.load_vapid(str(missing))
    assert not missing.exists()   # py_vapid's from_file would have generated one here


def test_a_vapid_key_loads_from_a_file_or_pem_text(tmp_path, vapid_pem):
    path = tmp_path / "private.pem"
    path.write_text(vapid_pem)
    from_file, from_text = transports.load_vapid(str(path)), transports.load_vapid(vapid_pem)
    assert from_file.public_key.public_numbers() == from_text.public_key.public_numbers()


@pytest.mark.parametrize(("value", "seconds"), [("7", 7.0), ("garbage", None), (None, None),
                                                ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)])
def test_retry_after_is_seconds_or_an_http_date(value, seconds):
    assert transports.retry_after_seconds(value) == seconds
