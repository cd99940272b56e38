"""1,000 fuzzed messages published raw to a real worker: it stays up, and every message is
accounted for (a result or a dead letter)."""
from __future__ import annotations

import json
import os
import pickle
import random
import string
import time
import uuid

import pytest
import redis
from sqlalchemy import text

from tests.operations.chaos import Figures
from tests.operations.conftest import EMBED, publish_raw, task_headers, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

VALID = "valid"


def fuzz_message(rng: random.Random, index: int) -> tuple[str, bytes, dict, str]:
    """(kind, body, headers, content_type) for one message; kind VALID must succeed."""
    task_id = str(uuid.uuid4())
    ctype = "application/json"
    kind = rng.choice(["valid", "valid", "unknown_task", "wrong_type", "missing_arg", "extra_kwarg",
                       "truncated_json", "garbage_bytes", "pickle", "yaml", "bad_shape", "non_utf8",
                       "task_header_type", "no_id", "nul_strings", "huge_list", "oversized"])
    if kind == "oversized" and rng.random() > 0.1:  # keep the 256 KB bodies rare
        kind = "valid"
    name, args, kwargs = "maintenance.echo", ["x"], {}
    if kind == "valid":
        name, args = rng.choice([("maintenance.noop", []), ("maintenance.echo", [f"v{index}"]),
                                 ("maintenance.canary", [f"fz-{index}"])])
    elif kind == "unknown_task":
        name = "".join(rng.choice(string.ascii_letters + ".:_-/ ") for _ in range(rng.randint(1, 80)))
    elif kind == "wrong_type":
        args = [rng.choice([1, 2.5, True, None, {"a": 1}, [1, 2]])]
    elif kind == "missing_arg":
        args = []
    elif kind == "extra_kwarg":
        kwargs = {"".join(rng.choice(string.ascii_lowercase) for _ in range(6)): 1}
    elif kind == "nul_strings":
        args = ["a\x00b\u202e\ud7ff"]
        kind = VALID  # a legal string: echo returns it
    elif kind == "huge_list":
        name, args = "maintenance.canary", [["x"] * 20_000]
    headers = task_headers(name, task_id)
    body = json.dumps([args, kwargs, EMBED]).encode()
    if kind == "truncated_json":
        body = body[: rng.randint(1, len(body) - 1)]
    elif kind == "garbage_bytes":
        body = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300)))
    elif kind == "pickle":
        body, ctype = pickle.dumps([args, kwargs, {}]), "application/x-python-serialize"
    elif kind == "yaml":
        body, ctype = b"- [x]\n- {}\n", "application/x-yaml"
    elif kind == "bad_shape":
        body = json.dumps(rng.choice([{"a": 1}, [1], "str", 42, None, [[], {}]])).encode()
    elif kind == "non_utf8":
        body = b'[["\xff\xfe"], {}, {}]'
    elif kind == "task_header_type":
        headers["task"] = rng.choice([123, None, ["maintenance.noop"]])
    elif kind == "no_id":
        headers.pop("id")
    elif kind == "oversized":
        body = json.dumps([["y" * (300 * 1024)], {}, EMBED]).encode()
    return kind, body, headers, ctype


@pytest.mark.parametrize("count", [
    150,  # the bounded CI run
    pytest.param(1000, marks=pytest.mark.slow_chaos),
])
def test_fuzzed_messages_are_all_accounted_for_and_the_worker_stays_up(chaos_broker, clean_db, tmp_path, count):
    isolated = chaos_broker
    worker = isolated.start_worker("fuzz", ["maintenance"], concurrency=2, log_path=tmp_path / "worker.log")
    rng = random.Random(20261125 + count)
    sent: list[tuple[str, dict]] = []
    for index in range(count):
        kind, body, headers, ctype = fuzz_message(rng, index)
        publish_raw(isolated.app, body, headers, content_type=ctype, broker_url=isolated.broker_url)
        sent.append((kind, headers))

    backend = redis.Redis.from_url(isolated.backend_url)

    def outcome(headers) -> str | None:
        task_id = headers.get("id")
        if task_id is None:
            return None
        with clean_db.connect() as connection:
            if connection.scalar(text("SELECT 1 FROM dead_letters WHERE task_id = :id"), {"id": task_id}):
                return "dead_letter"
        raw = backend.get(f"celery-task-meta-{task_id}")
        return json.loads(raw)["status"] if raw else None

    started = time.monotonic()
    with_id = [(kind, headers) for kind, headers in sent if "id" in headers]
    no_id = len(sent) - len(with_id)

    def settled():
        return all(outcome(h) is not None for _, h in with_id)

    try:
        wait_until(settled, timeout=120, interval=1.0, what="every fuzzed message settled")
    except AssertionError:
        from collections import Counter

        stuck = Counter(kind for kind, h in with_id if outcome(h) is None)
        pytest.fail(f"unsettled messages by kind: {dict(stuck)}; worker alive: {worker.poll() is None}")
    with clean_db.connect() as connection:
        anonymous = connection.scalar(text("SELECT count(*) FROM dead_letters WHERE task_id LIKE 'no-id-%'"))
        codes = dict(connection.execute(text("SELECT error_code, count(*) FROM dead_letters GROUP BY 1")).all())
    outcomes = [(kind, outcome(h)) for kind, h in with_id]
    valid_ok = sum(1 for kind, o in outcomes if kind == VALID and o == "SUCCESS")
    valid = sum(1 for kind, _ in outcomes if kind == VALID)
    invalid_dead = sum(1 for kind, o in outcomes if kind != VALID and o == "dead_letter")
    invalid = sum(1 for kind, _ in outcomes if kind != VALID)
    accounted = valid_ok + invalid_dead + min(anonymous, no_id)
    assert worker.poll() is None, "the worker died"
    assert isolated.app.send_task("maintenance.noop").get(timeout=30) is None
    figures = Figures(f"fuzz_{count}[{isolated.kind}]", sent=len(sent), completed=valid_ok, lost=len(sent) - accounted,
                      recovery_s=time.monotonic() - started,
                      extra={"valid": valid, "dead_lettered": invalid_dead + anonymous, "by_code": codes})
    figures.report()
    assert valid_ok == valid
    assert invalid_dead == invalid, [(k, o) for k, o in outcomes if k != VALID and o != "dead_letter"][:10]
    assert anonymous == no_id
    assert accounted == len(sent)
