"""Messages built from templates: a notification's email and push payload, a digest's email.

Texts come from the notification row (its title and message already carry the
batch's count: "25 people liked your post"). Every value put into HTML is
escaped; the templates are ``string.Template`` files beside this module.
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr, parseaddr
from functools import lru_cache
from pathlib import Path
from string import Template

from tasks.delivery import unsubscribe

TEMPLATES = Path(__file__).resolve().parent / "templates"
PUSH_BODY_LIMIT = 3000  # bytes of JSON; Web Push carries 4,096 after encryption overhead
# Notification texts are the web tier's and its users': bounded before they become a message.
SUBJECT_LIMIT = 200
MESSAGE_LIMIT = 5000
DIGEST_ITEM_LIMIT = 500


def _one_line(value: str, limit: int = SUBJECT_LIMIT) -> str:
    """A header value from data: no CR/LF (compat32 would write them through: header injection), bounded."""
    return " ".join(value.split())[:limit]


@lru_cache(maxsize=None)
def _template(name: str) -> Template:
    return Template((TEMPLATES / name).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Links:
    base_url: str

    @property
    def open_url(self) -> str:
        return f"{self.base_url.rstrip('/')}/notifications"

    def unsubscribe_url(self, token: str) -> str:
        return f"{self.base_url.rstrip('/')}/notifications/unsubscribe?token={token}"


def message_id(kind: str, row_id: str, mail_from: str) -> str:
    """Stable per delivery row: a resend after a crash carries the same Message-ID, which
    lets the receiving side (and our at-most-one-duplicate count) recognise it."""
    domain = parseaddr(mail_from)[1].rpartition("@")[2] or "localhost"
    return f"<{kind}.{row_id}@{domain}>"


# The compat32 MIME classes, not EmailMessage: the modern API parses every header it
# is given and re-parses it when flattened, five times the cost of the whole render
# (1 ms against 0.1 ms an email, measured in the email benchmark). These messages are
# built from known parts, so nothing needs that parsing. Bodies are UTF-8 quoted-printable.
_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP


def _header(value: str) -> str | Header:
    return value if value.isascii() else Header(value, "utf-8")


def _email(*, mail_from: str, to: str, subject: str, msg_id: str, text_body: str, html_body: str,
           unsubscribe_url: str, sent_at) -> Message:
    message = MIMEMultipart("alternative")
    name, address = parseaddr(mail_from)
    message["From"] = formataddr((name, address), charset="utf-8")
    message["To"] = _one_line(to, 320)  # the web tier's users.email: data, like the texts
    message["Subject"] = _header(subject)
    message["Message-ID"] = msg_id
    message["Date"] = format_datetime(sent_at)
    message["List-Unsubscribe"] = f"<{unsubscribe_url}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["Auto-Submitted"] = "auto-generated"
    message.attach(MIMEText(text_body, "plain", _UTF8_QP))
    message.attach(MIMEText(html_body, "html", _UTF8_QP))
    return message


def notification_email(*, notification: dict, to: str, msg_id: str, mail_from: str, links: Links,
                       secret: str, sent_at) -> Message:
    kind = notification["type"]
    token = unsubscribe.sign(notification["user_id"], kind, secret)
    values = {"title": _one_line(notification["title"]), "message": notification["message"][:MESSAGE_LIMIT],
              "kind": kind,
              "open_url": links.open_url, "unsubscribe_url": links.unsubscribe_url(token)}
    escaped = {key: html.escape(value) for key, value in values.items()}
    return _email(mail_from=mail_from, to=to, subject=values["title"], msg_id=msg_id,
                  text_body=_template("notification.txt").substitute(values),
                  html_body=_template("notification.html").substitute(escaped),
                  unsubscribe_url=values["unsubscribe_url"], sent_at=sent_at)


def digest_email(*, user_id: int, period: str, items: list[dict], total: int, to: str, msg_id: str,
                 mail_from: str, links: Links, secret: str, sent_at) -> Message:
    token = unsubscribe.sign(user_id, "digest", secret)
    more = total - len(items)
    more_text = f"… and {more} more.\n" if more > 0 else ""
    items = [{"title": _one_line(i["title"]), "message": i["message"][:DIGEST_ITEM_LIMIT]} for i in items]
    values = {"period": period, "count": str(total), "open_url": links.open_url,
              "unsubscribe_url": links.unsubscribe_url(token),
              "items_text": "".join(f"- {i['title']}: {i['message']}\n" for i in items),
              "more_text": more_text}
    html_values = {**{k: html.escape(v) for k, v in values.items()},
                   "items_html": "\n".join(f"<li><b>{html.escape(i['title'])}</b>: {html.escape(i['message'])}</li>"
                                           for i in items),
                   "more_html": html.escape(more_text.strip())}
    return _email(mail_from=mail_from, to=to, subject=f"Your {period} Grateful digest: {total} unread",
                  msg_id=msg_id, text_body=_template("digest.txt").substitute(values),
                  html_body=_template("digest.html").substitute(html_values),
                  unsubscribe_url=values["unsubscribe_url"], sent_at=sent_at)


def push_payload(notification: dict, links: Links) -> str:
    """The JSON a service worker shows: title, body, a tag that collapses one batch, a link."""
    payload = {"title": notification["title"], "body": notification["message"][:1000],
               "notification_id": notification["id"], "type": notification["type"],
               "count": notification["batch_count"], "tag": notification["batch"], "url": links.open_url}
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    if len(text.encode()) > PUSH_BODY_LIMIT:
        payload["body"] = payload["body"][:200]
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return text
