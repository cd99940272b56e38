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
the send leaves a task for a row that never existed.

Savepoints: SQLAlchemy fires ``after_commit`` when a SAVEPOINT is released and
``after_rollback`` when one is rolled back, so listening to those alone sends a
savepoint's tasks before the outer transaction has committed, and a rolled-back
savepoint drops the outer transaction's tasks too. Each queued signature is
therefore owned by the innermost savepoint (or the root transaction) open when
it was queued: releasing a savepoint hands its signatures to the enclosing
level, only the root transaction's commit sends, and a transaction level that
ends without committing (rollback, ``close()``) drops exactly its own.

Sending after the commit retries a broken broker connection (Celery's publish
retry policy, ``SEND_RETRY_POLICY``: about 6 s in all). If the broker stays down
beyond that, the task is lost for this commit and an error is logged with its
name (``unsent_task``; never its arguments); a periodic sweep of the family's source
rows (every family's reconcile job) is the backstop.
"""
from __future__ import annotations

import logging

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

log = logging.getLogger("workers.reliability.enqueue")

_PENDING = "workers.pending_signatures"  # {owning SessionTransaction | None: [signature, ...]}
_HOOKED = "workers.pending_hooked"
SEND_RETRY_POLICY = {"max_retries": 5, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2.0}


def enqueue_on_commit(session: Session, signature) -> None:
    """Queue a Celery signature to be sent after ``session``'s outermost transaction commits;
    dropped if the transaction (or the savepoint it was queued in) rolls back."""
    if not session.info.get(_HOOKED):
        event.listen(session, "after_transaction_create", _adopt_unowned)
        event.listen(session, "after_commit", _on_commit)
        event.listen(session, "after_transaction_end", _discard_uncommitted)
        session.info[_HOOKED] = True
    # None: no transaction has begun yet (autobegin); the next root transaction adopts it.
    owner = session.get_nested_transaction() or session.get_transaction()
    session.info.setdefault(_PENDING, {}).setdefault(owner, []).append(signature)


def pending(session: Session) -> list:
    """Every signature still waiting for a commit, outermost level first."""
    return [signature for signatures in session.info.get(_PENDING, {}).values() for signature in signatures]


def _owner(transaction: SessionTransaction | None) -> SessionTransaction | None:
    """The level that owns signatures queued in ``transaction``: skip flush's internal subtransactions."""
    while transaction is not None and not transaction.nested and transaction.parent is not None:
        transaction = transaction.parent
    return transaction


def _adopt_unowned(session: Session, transaction: SessionTransaction) -> None:
    levels = session.info.get(_PENDING, {})
    if transaction.parent is None and None in levels:
        levels.setdefault(transaction, []).extend(levels.pop(None))


def _on_commit(session: Session) -> None:
    # The transaction committing is the innermost savepoint when one is open (a release),
    # else the root: savepoints are always released before their root commits.
    committing = session.get_nested_transaction() or session.get_transaction()
    levels = session.info.get(_PENDING, {})
    signatures = levels.pop(committing, [])
    if not signatures:
        return
    if committing.parent is not None:
        levels.setdefault(_owner(committing.parent), []).extend(signatures)
        return
    _send(signatures)


def _send(signatures: list) -> None:
    for signature in signatures:
        signature.freeze()  # fixes the task id now, so the error below can name it
        try:
            signature.apply_async(retry=True, retry_policy=SEND_RETRY_POLICY)
        except Exception:  # noqa: BLE001 - the commit stands; say loudly what was not sent
            # Name and id only: the arguments are user data and stay out of logs.
            log.exception("could not send %s after commit", signature.task,
                          extra={"unsent_task": signature.task, "task_id": signature.id})


def _discard_uncommitted(session: Session, transaction: SessionTransaction) -> None:
    # A level that committed handed its signatures on in _on_commit; whatever it still
    # owns at its end was rolled back (or closed without a commit).
    dropped = session.info.get(_PENDING, {}).pop(transaction, [])
    if dropped:
        log.info("%s rolled back: %d queued task(s) not sent",
                 "savepoint" if transaction.nested else "transaction", len(dropped))
