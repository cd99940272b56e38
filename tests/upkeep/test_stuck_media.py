"""The stuck-upload sweep (tasks/upkeep/stuck_media.py): a stuck row is sent again once, through a
real broker after the commit, and failed as worker_lost at a later sweep; fresh, finished and
dry-run rows are left alone."""
from __future__ import annotations

import base64
import hashlib
import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import redis
from sqlalchemy import text

from celeryconfig import QUEUE_TIME_LIMITS
from db.session import session_scope
from tasks.upkeep import jobs, stuck_media

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)
LATER = NOW + timedelta(minutes=15)  # the next sweep


@pytest.fixture
def broker(isolated, monkeypatch):
    """The sweep's sends go to a Redis db of their own that no worker consumes; yields a reader of
    the messages that arrived on a queue."""
    monkeypatch.setattr(stuck_media, "app", isolated.app)
    client = redis.Redis.from_url(isolated.broker_url)

    def messages(queue: str = "images") -> list[dict]:
        found = []
        for raw in reversed(client.lrange(queue, 0, -1)):  # LPUSH: the oldest is last
            message = json.loads(raw)
            args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            found.append({"task": message["headers"]["task"], "args": args, "kwargs": kwargs,
                          "routing_key": message["properties"]["delivery_info"]["routing_key"]})
        return found

    yield messages
    client.close()


def subject(engine) -> tuple[int, str]:
    with engine.begin() as conn:
        user_id = conn.execute(text(
            "INSERT INTO users (email, username, hashed_password) VALUES ('m@example.com', 'm', '!') RETURNING id"
        )).scalar_one()
        post_id = conn.execute(text(
            "INSERT INTO posts (author_id, content) VALUES (:u, 'photo') RETURNING id::text"), {"u": user_id}
        ).scalar_one()
    return user_id, post_id


def media(engine, *, user_id: int, post_id: str | None, status: str, created_at: datetime, updated_at: datetime,
          source: str | None = "uploads/a.jpg", purpose: str | None = None) -> str:
    purpose = purpose or ("post_photo" if post_id else "profile_photo")
    with engine.begin() as conn:
        return conn.execute(text(
            "INSERT INTO media_files (user_id, post_id, purpose, dedupe_key, original_name, storage_path, "
            "processing_status, attempts, created_at, updated_at) VALUES (:u, :p, :purpose, :k, :src, 'x', "
            "CAST(:s AS processing_status_enum), 1, :c, :m) RETURNING id::text"),
            {"u": user_id, "p": post_id, "purpose": purpose, "k": hashlib.sha256(uuid.uuid4().bytes).hexdigest(),
             "src": source, "s": status, "c": created_at, "m": updated_at}).scalar_one()


def row(engine, media_id: str):
    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT processing_status::text AS status, metadata AS meta, updated_at FROM media_files WHERE id = :i"),
            {"i": media_id}).one()


def sweep(now: datetime, dry_run: bool = False) -> dict:
    with session_scope() as session:
        return stuck_media.sweep(session, now, dry_run=dry_run)


def test_stuck_processing_is_sent_again_once_then_failed_as_worker_lost(fresh, broker):
    user_id, post_id = subject(fresh)
    cutoff = stuck_media.processing_cutoff(NOW)
    # The images queue's hard time limit plus five minutes (docs/tasks.md).
    assert cutoff == NOW - timedelta(seconds=QUEUE_TIME_LIMITS["images"][1]) - timedelta(minutes=5)
    stuck = media(fresh, user_id=user_id, post_id=post_id, status="PROCESSING",
                  created_at=cutoff - timedelta(minutes=5), updated_at=cutoff - timedelta(seconds=1))
    # Just inside the limit: a worker may still be on it.
    busy = media(fresh, user_id=user_id, post_id=None, status="PROCESSING", source="uploads/b.jpg",
                 created_at=cutoff - timedelta(minutes=5), updated_at=cutoff + timedelta(seconds=1))

    assert sweep(NOW) == {"requeued": 1, "worker_lost": 0}

    first = row(fresh, stuck)
    assert first.status == "PROCESSING"
    assert first.meta["swept_at"] == NOW.isoformat()
    assert broker() == [{"task": "images.process_post_photo", "args": [],
                         "kwargs": {"post_id": post_id, "source_path": "uploads/a.jpg"}, "routing_key": "images"}]
    assert row(fresh, busy).status == "PROCESSING" and row(fresh, busy).meta is None

    # Next sweep: `stuck` was already sent again, so it is failed; `busy` is stuck by now, sent again once.
    assert sweep(LATER) == {"requeued": 1, "worker_lost": 1}

    failed = row(fresh, stuck)
    assert failed.status == "FAILED"
    assert failed.meta["error_code"] == "worker_lost"
    assert "swept_at" in row(fresh, busy).meta and row(fresh, busy).status == "PROCESSING"
    assert [(m["task"], m["kwargs"]) for m in broker()] == [
        ("images.process_post_photo", {"post_id": post_id, "source_path": "uploads/a.jpg"}),
        ("images.process_profile_photo", {"user_id": user_id, "source_path": "uploads/b.jpg"})]


def test_second_sweep_fails_only_what_was_already_sent_again(fresh, broker):
    user_id, post_id = subject(fresh)
    cutoff = stuck_media.processing_cutoff(NOW)
    stuck = media(fresh, user_id=user_id, post_id=post_id, status="PROCESSING",
                  created_at=cutoff - timedelta(minutes=5), updated_at=cutoff - timedelta(seconds=1))

    assert sweep(NOW) == {"requeued": 1, "worker_lost": 0}
    assert sweep(LATER) == {"requeued": 0, "worker_lost": 1}
    assert sweep(LATER + timedelta(minutes=15)) == {"requeued": 0, "worker_lost": 0}  # FAILED is final

    final = row(fresh, stuck)
    assert final.status == "FAILED" and final.meta["error_code"] == "worker_lost"
    assert len(broker()) == 1  # sent again exactly once


def test_nothing_is_sent_when_the_sweep_rolls_back(fresh, broker):
    user_id, post_id = subject(fresh)
    cutoff = stuck_media.processing_cutoff(NOW)
    stuck = media(fresh, user_id=user_id, post_id=post_id, status="PROCESSING",
                  created_at=cutoff - timedelta(minutes=5), updated_at=cutoff - timedelta(seconds=1))

    with pytest.raises(RuntimeError):
        with session_scope() as session:
            assert stuck_media.sweep(session, NOW) == {"requeued": 1, "worker_lost": 0}
            raise RuntimeError("the transaction fails after the sweep")

    assert row(fresh, stuck).meta is None
    assert broker() == []
    assert sweep(NOW) == {"requeued": 1, "worker_lost": 0}  # still stuck, sent again by the next sweep
    assert len(broker()) == 1


def test_pending_for_an_hour_counts_ten_minutes_does_not(fresh, broker):
    user_id, _post_id = subject(fresh)
    old = media(fresh, user_id=user_id, post_id=None, status="PENDING",
                created_at=NOW - timedelta(minutes=61), updated_at=NOW - timedelta(minutes=61))
    young = media(fresh, user_id=user_id, post_id=None, status="PENDING", source="uploads/young.jpg",
                  created_at=NOW - timedelta(minutes=10), updated_at=NOW - timedelta(minutes=10))

    assert sweep(NOW) == {"requeued": 1, "worker_lost": 0}

    assert row(fresh, old).meta == {"swept_at": NOW.isoformat()}
    assert row(fresh, old).status == "PENDING"
    assert broker() == [{"task": "images.process_profile_photo", "args": [],
                         "kwargs": {"user_id": user_id, "source_path": "uploads/a.jpg"}, "routing_key": "images"}]
    assert row(fresh, young).meta is None and row(fresh, young).status == "PENDING"

    sweep(LATER)
    assert row(fresh, old).status == "FAILED" and row(fresh, old).meta["error_code"] == "worker_lost"
    assert row(fresh, young).status == "PENDING"


def test_finished_rows_are_never_touched(fresh, broker):
    user_id, post_id = subject(fresh)
    long_ago = NOW - timedelta(days=3)
    done = media(fresh, user_id=user_id, post_id=post_id, status="COMPLETED", created_at=long_ago, updated_at=long_ago)
    failed = media(fresh, user_id=user_id, post_id=None, status="FAILED", source="uploads/f.jpg",
                   created_at=long_ago, updated_at=long_ago)
    before = {i: row(fresh, i) for i in (done, failed)}

    for moment in (NOW, LATER, LATER + timedelta(hours=1)):
        assert sweep(moment) == {"requeued": 0, "worker_lost": 0}

    assert {i: row(fresh, i) for i in (done, failed)} == before
    assert broker() == []


def test_stuck_without_a_source_is_failed_at_once(fresh, broker):
    user_id, _post_id = subject(fresh)
    nameless = media(fresh, user_id=user_id, post_id=None, status="PENDING", source=None,
                     created_at=NOW - timedelta(hours=2), updated_at=NOW - timedelta(hours=2))

    assert sweep(NOW) == {"requeued": 0, "worker_lost": 1}
    assert row(fresh, nameless).status == "FAILED"
    assert row(fresh, nameless).meta["error_code"] == "worker_lost"
    assert broker() == []


def test_dry_run_changes_nothing(fresh, broker):
    user_id, post_id = subject(fresh)
    now = datetime.now(timezone.utc)  # the job below sweeps as of now
    cutoff = stuck_media.processing_cutoff(now)
    fresh_stuck = media(fresh, user_id=user_id, post_id=post_id, status="PROCESSING",
                        created_at=cutoff - timedelta(minutes=5), updated_at=cutoff - timedelta(seconds=1))
    swept = media(fresh, user_id=user_id, post_id=None, status="PENDING", source="uploads/s.jpg",
                  created_at=now - timedelta(hours=2), updated_at=now - timedelta(hours=2))
    with fresh.begin() as conn:
        conn.execute(text("UPDATE media_files SET metadata = '{\"swept_at\": \"earlier\"}' WHERE id = :i"),
                     {"i": swept})
    before = {i: row(fresh, i) for i in (fresh_stuck, swept)}

    # Committed on purpose: a dry run must not have written anything to commit.
    assert sweep(now, dry_run=True) == {"requeued": 1, "worker_lost": 1}
    assert {i: row(fresh, i) for i in before} == before
    assert broker() == []

    recorded = jobs.sweep_stuck_media(dry_run=True)
    assert (recorded["requeued"], recorded["worker_lost"]) == (1, 1)
    assert {i: row(fresh, i) for i in before} == before
    assert broker() == []
    with fresh.connect() as conn:
        runs = conn.execute(text("SELECT status, dry_run FROM upkeep_runs WHERE job = 'sweep_stuck_media'")).all()
    assert [r.dry_run for r in runs] == [True]


# --- what operators see after a sweep that failed an upload -------------------------------------

def stuck_then_failed(engine) -> str:
    user_id, _post_id = subject(engine)
    now = datetime.now(timezone.utc)
    media_id = media(engine, user_id=user_id, post_id=None, status="PENDING", source=None,
                     created_at=now - timedelta(hours=2), updated_at=now - timedelta(hours=2))
    return media_id


def test_health_after_a_sweep_that_failed_an_upload(fresh, broker):
    media_id = stuck_then_failed(fresh)
    report = jobs.sweep_stuck_media()
    assert report["worker_lost"] == 1 and row(fresh, media_id).status == "FAILED"

    state, problems = jobs.health()

    assert not any("sweep_stuck_media" in p for p in problems), problems
    assert state["sweep_stuck_media"]["status"] == "ok"  # the sweep did its job


def test_upkeep_command_after_a_sweep_that_fails_an_upload(fresh, broker, capsys):
    from tasks.upkeep.cli import upkeep_main

    media_id = stuck_then_failed(fresh)
    code = upkeep_main()

    assert row(fresh, media_id).status == "FAILED"
    assert code == 0
