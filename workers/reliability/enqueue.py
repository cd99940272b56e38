"""Transactional enqueue for the web tier: send tasks only once the transaction commits.

    from workers.reliability.enqueue import enqueue_on_commit

    with session_scope() as session:
        post = Post(...)
        session.add(post)
        session.flush()
        enqueue_on_commit(session, mentions_extract.s(post_id=str(post.id)))
    # committed: the task is sent now; rolled back: it never is.

Sending inside the transaction races the commit: a fast worker can look the row
up before it is visible (and return quietly as "gone"), and a rollback after
the send leaves a task for a row that never existed. Queued signatures are kept
in ``session.info`` and sent from SQLAlchemy's ``after_commit`` event of the
outermost transaction; ``after_rollback`` discards them.

Sending after the commit retries a broken broker connection (Celery's publish
retry policy). If the broker stays down beyond that, the task is lost for this
commit and an error is logged with its name and arguments; a periodic sweep of
the family's source rows (every family's reconcile job) is the backstop.
"""
from __future__ import annotations

import logging

from sqlalchemy import event
from sqlalchemy.orm import Session

log = logging.getLogger("workers.reliability.enqueue")

_PENDING = "workers.pending_signatures"
_HOOKED = "workers.pending_hooked"
SEND_RETRY_POLICY = {"max_retries": 5, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2.0}


def enqueue_on_commit(session: Session, signature) -> None:
    """Queue a Celery signature to be sent after ``session`` commits; dropped on rollback."""
    session.info.setdefault(_PENDING, []).append(signature)
    if not session.info.get(_HOOKED):
        event.listen(session, "after_commit", _send_pending)
        event.listen(session, "after_rollback", _discard_pending)
        event.listen(session, "after_soft_rollback", _discard_pending_on_soft_rollback)
        session.info[_HOOKED] = True


def pending(session: Session) -> list:
    return list(session.info.get(_PENDING, []))


def _send_pending(session: Session) -> None:
    signatures = session.info.pop(_PENDING, [])
    for signature in signatures:
        try:
            signature.apply_async(retry=True, retry_policy=SEND_RETRY_POLICY)
        except Exception:  # noqa: BLE001 - the commit stands; say loudly what was not sent
            log.exception("could not send %s after commit", signature.task,
                          extra={"unsent_task": signature.task, "unsent_args": repr(signature.args)[:500],
                                 "unsent_kwargs": repr(signature.kwargs)[:500]})


def _discard_pending(session: Session) -> None:
    dropped = session.info.pop(_PENDING, [])
    if dropped:
        log.info("transaction rolled back: %d queued task(s) not sent", len(dropped))


def _discard_pending_on_soft_rollback(session: Session, previous_transaction) -> None:
    if previous_transaction.parent is None:  # only the outermost transaction's rollback
        _discard_pending(session)
