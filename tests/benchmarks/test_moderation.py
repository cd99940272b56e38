"""moderation.score_content against the bare classifier call on the same texts, in one process.

The baseline is alt-profanity-check's own ``predict_prob`` on one text at a time,
the call a task that scores one post per message would make. Ours is the whole
score: the per-content lock, the text, its repetition count, the classifier, the
``content_moderation`` insert, the hide decision, and the commit, against real
PostgreSQL. Every text is distinct, so every one is scored (none is ``unchanged``).
"""
from __future__ import annotations

import time
from datetime import datetime, timezone

from sqlalchemy import text

from tests.benchmarks.conftest import Goal, NoGoal
from tests.moderation.texts import CLEAN, OFFENSIVE, precision_recall

TEXTS = 600
AUTHORS = 60


def _texts() -> list[str]:
    table = list(CLEAN) + list(OFFENSIVE)
    return [f"{table[i % len(table)]} #{i}" for i in range(TEXTS)]


def _seed_posts(engine, texts: list[str]) -> list[str]:
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO users (email, username, hashed_password) "
            "SELECT 'm' || g || '@example.com', 'm' || g, '!' FROM generate_series(1, :n) AS g"), {"n": AUTHORS})
        authors = connection.execute(text("SELECT id FROM users ORDER BY id")).scalars().all()
        ids = connection.execute(text(
            "INSERT INTO posts (author_id, content) "
            "SELECT (CAST(:authors AS integer[]))[1 + (n - 1) % :k], t "
            "FROM unnest(CAST(:texts AS text[])) WITH ORDINALITY AS x(t, n) ORDER BY n RETURNING id::text"),
            {"authors": authors, "k": len(authors), "texts": texts}).scalars().all()
        connection.execute(text("ANALYZE posts"))
    return ids


def test_score_content_against_the_bare_classifier(clean_db, bench_record):
    from db.session import session_scope
    from tasks.moderation import scoring
    from tasks.moderation.classifier import MODEL

    texts = _texts()
    post_ids = _seed_posts(clean_db, texts)
    MODEL.warm()
    MODEL.library_probabilities(texts[:20])   # both paths warm before the clocks start

    started = time.perf_counter()
    for body in texts:
        MODEL.library_probabilities([body])
    bare = len(texts) / (time.perf_counter() - started)

    now = datetime.now(timezone.utc)
    started = time.perf_counter()
    for post_id in post_ids:
        with session_scope() as session:
            scoring.score_content(session, "POST", post_id, threshold=0.8, now=now)
    ours = len(post_ids) / (time.perf_counter() - started)

    with clean_db.connect() as connection:
        rows, flagged = connection.execute(text(
            "SELECT count(*), count(*) FILTER (WHERE status = 'FLAGGED') FROM content_moderation")).one()
    assert rows == TEXTS and 0 < flagged < TEXTS

    bench_record("moderation.score_content_throughput", ours, "texts/s", bare,
                 "profanity_check.predict_prob, one text per call (same texts, same run)", texts=TEXTS,
                 goal=Goal("ratio", ">=", 0.8, "the whole score with its database work, vs the bare classifier"))

    started = time.perf_counter()
    for body in texts:
        MODEL.probabilities([body])
    fast = len(texts) / (time.perf_counter() - started)
    bench_record("moderation.classifier_fast_path", fast, "texts/s", bare,
                 "profanity_check.predict_prob, one text per call (same texts, same run)",
                 goal=NoGoal("where the score's time goes: the same model as one sparse product, "
                             "equal to predict_prob to 1e-9 (tests/moderation)"))

    precision, recall = precision_recall()
    bench_record("moderation.precision_on_fixed_table", precision, "fraction", recall,
                 "recall on the same table (tests/moderation/texts.py)",
                 goal=NoGoal("quality on a small labelled table, reported; the test asserts a sane floor only"))
