"""`make run`'s engine end to end: `python -m workers run --once` against the test
database and broker starts 4 workers, beat, Flower and the exporter, runs every
family's demo, exits 0 and leaves no child process behind."""
import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
import redis

from tests.conftest import BROKERS

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ("analytics", "cache", "delivery", "engagement", "feed", "graph", "images", "maintenance", "mentions",
            "moderation", "notifications", "search", "upkeep")

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(params=BROKERS)
def runner_broker(request):
    """(broker, backend, extra env) of the runner's own: Redis db 14/15, or a RabbitMQ vhost with
    results in Redis db 15 and the analytics counters in db 14."""
    from tests.conftest import RabbitVhost, redis_url_for

    for db in (14, 15):
        redis.Redis.from_url(redis_url_for(db)).flushdb()
    if request.param == "redis":
        yield redis_url_for(14), redis_url_for(15), {}
        return
    vhost = RabbitVhost("jobs_runner")
    try:
        yield vhost.url, redis_url_for(15), {"ANALYTICS_REDIS_URL": redis_url_for(14)}
    finally:
        vhost.remove()


def test_run_once_runs_every_family_and_stops_everything(clean_db, tmp_path, runner_broker):
    # A broker of its own: the session's in-process test worker, which consumes every queue of
    # the shared test broker, must not take the runner's tasks (it lacks the runner's SMTP sink
    # and push service, for one). On RabbitMQ, every family, beat, Flower and the exporter
    # run over quorum queues.
    broker, backend, extra = runner_broker
    env = dict(os.environ, DATA_DIR=str(tmp_path / "data"), MEDIA_ROOT=str(tmp_path / "media"),
               FLOWER_PORT=str(free_port()), EXPORTER_PORT=str(free_port()),
               FLOWER_BASIC_AUTH="ops:test-secret", BROKER_URL=broker, RESULT_BACKEND=backend, **extra)
    proc = subprocess.Popen([sys.executable, "-m", "workers", "run", "--once"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output[-3000:]
    # Secrets never reach the terminal: not Flower's password, not a password in a service URL.
    secrets = ["test-secret"] + [urlsplit(env[name]).password for name in ("DATABASE_URL", "BROKER_URL", "RESULT_BACKEND")
                                 if env.get(name) and urlsplit(env[name]).password]
    secrets.append((tmp_path / "data" / "unsubscribe_secret").read_text().strip())
    assert not [secret for secret in secrets if secret in output], [l for l in output.splitlines() if any(s in l for s in secrets)]
    assert "workers answering: core@" in output
    table = output.split("family", 1)[1]
    for family in FAMILIES:
        line = next(l for l in table.splitlines() if l.strip().startswith(family + " "))
        sent, ok, failed, pending = (int(x) for x in line.split()[1:5])
        assert sent > 0 and ok == sent and failed == 0 and pending == 0, line
    # The demo's mention went out for real: an email in the SMTP sink, a decrypted push in the receiver.
    delivery = next(l for l in table.splitlines() if l.strip().startswith("delivery "))
    assert "email sent" in delivery and "push sent" in delivery, delivery
    # Two viewers, two answers: alice's friend finds her friends-only post too, a stranger does not.
    search = next(l for l in table.splitlines() if l.strip().startswith("search "))
    assert "finds 2 of alice's 2 posts, frank finds 1" in search, search
    # A cache key appears (the warm) and goes (an invalidation).
    cache = next(l for l in table.splitlines() if l.strip().startswith("cache "))
    assert "cached, TTL" in cache and "gone" in cache, cache
    [mail] = (tmp_path / "data" / "mail").glob("*.eml")
    assert "Bob mentioned you" in mail.read_text()
    pushes = [p.read_text() for p in (tmp_path / "data" / "push").glob("*.json")]
    assert any("Bob mentioned you" in p for p in pushes)
    leftovers = [p for p in psutil.process_iter(["cmdline"])
                 if p.info["cmdline"] and str(tmp_path / "data") in " ".join(p.info["cmdline"])]
    assert leftovers == []
