"""Typed outcomes of one hand-over to an SMTP server or a push service."""
from __future__ import annotations

from workers.errors import JobError


class TemporaryFailure(Exception):
    """The provider said "later" (SMTP 4xx, push 429/5xx, a connection lost): retry after ``retry_after``.

    Not a JobError: the task retries it with its own countdown, and only when the
    retries run out does it become a dead letter and the delivery FAILED.
    """

    def __init__(self, reply: str, retry_after: float | None = None):
        super().__init__(reply)
        self.reply = reply
        self.retry_after = retry_after


class PermanentFailure(JobError):
    """The provider refused for good (SMTP 5xx, push 400/403/413): the delivery is FAILED with the reply."""

    code = "delivery_refused"


class NotConfigured(JobError):
    """SMTP_URL or VAPID_PRIVATE_KEY is unset in the worker that got a send task."""

    code = "delivery_not_configured"
