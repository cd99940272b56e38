"""The multi-host harness itself: three hosts, services on one, reachability, a pulled cable, cleanup."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.multihost import netns

pytestmark = [pytest.mark.chaos, pytest.mark.slow_chaos]

ROOT = Path(__file__).resolve().parents[2]

# Run inside host b: each service answers over the bridge, with what the root namespace wrote.
PROBE = r"""
import json, sys
import kombu, psycopg, redis

pg_url, redis_url, amqp_url = sys.argv[1:]
with psycopg.connect(pg_url, connect_timeout=5) as conn:
    note = conn.execute("SELECT note FROM harness_probe").fetchone()[0]
value = redis.Redis.from_url(redis_url, socket_timeout=5).get("harness")
with kombu.Connection(amqp_url, connect_timeout=5) as conn:
    conn.ensure_connection(max_retries=1)
    version = conn.connection.server_properties["version"]
print(json.dumps({"postgres": note, "redis": value.decode(), "rabbitmq": str(version)}))
"""

# One TCP connection attempt: its outcome and how long it took.
CONNECT = r"""
import socket, sys, time
began = time.monotonic()
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
    outcome = "connected"
except OSError as error:
    outcome = type(error).__name__
print(outcome, round(time.monotonic() - began, 2))
"""

# An established Redis connection that pings on every line of stdin (no retries: one attempt, 3 s).
HOLD = r"""
import sys, time
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

client = redis.Redis.from_url(sys.argv[1], socket_timeout=3, retry=Retry(NoBackoff(), 0))
client.ping()
print("connected", flush=True)
for _ in sys.stdin:
    began = time.monotonic()
    try:
        outcome = "pong" if client.ping() else "no pong"
    except redis.RedisError as error:
        outcome = type(error).__name__
    print(outcome, round(time.monotonic() - began, 2), flush=True)
"""


def python_in(host: netns.Host, script: str, *args, timeout: float = 60) -> str:
    result = host.run([sys.executable, "-c", script, *args], timeout=timeout, cwd=ROOT,
                      capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def connect_from(host: netns.Host, target: netns.Host, port: int, timeout: float = 3) -> tuple[str, float]:
    outcome, seconds = python_in(host, CONNECT, target.address, port, timeout).split()
    return outcome, float(seconds)


def seed(pg: netns.Postgres, cache: netns.Redis, note: str) -> None:
    """Write through the unix sockets, from the root namespace (which has no route to the hosts)."""
    with psycopg.connect(pg.socket_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS harness_probe (note text)")
        conn.execute("DELETE FROM harness_probe")
        conn.execute("INSERT INTO harness_probe VALUES (%s)", (note,))
    redis.Redis.from_url(cache.socket_url).set("harness", note)


def probe(b: netns.Host, pg, cache, mq) -> dict:
    return json.loads(python_in(b, PROBE, pg.url, cache.url, mq.url))


def test_three_hosts_services_pulled_cable_and_cleanup():
    netns.skip_if_unsupported()
    with netns.Network() as net:
        a, b, c = net["a"], net["b"], net["c"]
        print(f"\nnetwork {net.prefix}: {net.subnet}, hosts {list(net.hosts.values())}, workdir {net.workdir}")
        pg = netns.postgres(a, net.workdir / "postgres")
        cache = netns.redis(a, net.workdir / "redis")
        mq = netns.rabbitmq(a, net.workdir / "rabbitmq")

        # Host b reaches all three over the bridge, and sees what the root namespace wrote.
        seed(pg, cache, "first")
        answers = probe(b, pg, cache, mq)
        print("from b:", answers)
        assert answers["postgres"] == "first" and answers["redis"] == "first" and answers["rabbitmq"]

        # The root namespace has no route into the network (the bridge has no address): a.address
        # goes out by its default route, if it has one, where no Redis answers. A TCP connect alone
        # proves nothing: behind an egress proxy that accepts every connection, it succeeds.
        route = subprocess.run(["ip", "route", "get", a.address], capture_output=True, text=True).stdout
        print("root namespace:", route.strip())
        assert net.bridge not in route
        with pytest.raises((redis.RedisError, OSError)):
            redis.Redis(host=a.address, port=cache.port, socket_timeout=2, socket_connect_timeout=2,
                        retry=Retry(NoBackoff(), 0)).ping()

        # b's cable is pulled: new connections time out, an established one stalls; c is unaffected.
        holder = b.popen([sys.executable, "-c", HOLD, cache.url], cwd=ROOT, text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert holder.stdout.readline().strip() == "connected"
        b.link_down()
        outcome, seconds = connect_from(b, a, cache.port, timeout=3)
        print(f"b -> a with the link down: {outcome} after {seconds} s")
        assert outcome == "TimeoutError" and seconds < 5
        holder.stdin.write("ping\n")
        holder.stdin.flush()
        stalled = holder.stdout.readline().split()
        print("b's established connection with the link down:", stalled)
        assert stalled[0] == "TimeoutError"
        assert connect_from(c, a, cache.port)[0] == "connected"

        b.link_up()
        assert connect_from(b, a, cache.port)[0] == "connected"
        holder.stdin.write("ping\n")
        holder.stdin.flush()
        assert holder.stdout.readline().split()[0] == "pong"  # reconnected after the timeout
        assert probe(b, pg, cache, mq)["postgres"] == "first"

        # Each restarts on its data (Redis has no persistence) and answers b again.
        for service in (pg, cache, mq):
            service.restart()
        with psycopg.connect(pg.socket_url) as conn:
            assert conn.execute("SELECT note FROM harness_probe").fetchone()[0] == "first"
        seed(pg, cache, "second")
        answers = probe(b, pg, cache, mq)
        assert answers["postgres"] == "second" and answers["redis"] == "second" and answers["rabbitmq"]

    netns_list = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    print(f"after: ip netns list: {netns_list.split() or 'nothing'}; "
          f"links: {[line.split()[0] for line in links.splitlines()]}")
    assert net.leftovers() == []
    assert net.prefix not in netns_list and net.prefix not in links
