"""Every environment variable the system reads, read here and nowhere else.

Each setting is a typed, documented field of ``Settings``. ``current()`` parses
the environment into one frozen ``Settings``: a value that does not parse, or
is out of range, raises ``SettingsError`` naming the variable and what it
accepts. The parsed value is cached and re-parsed only when one of these
variables changes in ``os.environ`` (the dev runner and the tests set them at
run time), so reading a setting costs a tuple comparison.

``docs/operations.md`` carries the table that ``settings_table()`` renders;
tests/test_docs.py keeps the two in step.

This module imports nothing of the project's: everything may import it.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent

SERVICE_URLS = ("DATABASE_URL", "BROKER_URL")


class SettingsError(ValueError):
    """An environment variable holds a value the system cannot use."""


class MissingServices(SettingsError):
    """A production process started without the URLs of its database and broker."""


def _setting(env: str, default: Any, doc: str, *, minimum: float | None = None, maximum: float | None = None,
             choices: tuple[str, ...] | None = None, secret: bool = False,
             check: Callable[[str, str], object] | None = None) -> Any:
    return field(default=default, metadata={"env": env, "doc": doc, "minimum": minimum, "maximum": maximum,
                                            "choices": choices, "secret": secret, "check": check})


def name_days_pairs(env: str, value: str) -> dict[str, int]:
    """``name=days[,name=days…]`` with whole days of at least 1 (the names are checked where they are defined)."""
    pairs = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, sep, days = (piece.strip() for piece in item.partition("="))
        if not (sep and name and days.removeprefix("-").isdecimal()):
            raise SettingsError(f"{env}: {item!r} is not name=days (a whole number of days)")
        if int(days) < 1:
            raise SettingsError(f"{env}: {name}={days} must be at least 1 day")
        pairs[name] = int(days)
    return pairs


BROKER_SCHEMES = {"redis": ("redis://", "rediss://", "unix://"), "amqp": ("amqp://", "amqps://", "pyamqp://")}


def broker_kind(url: str | None) -> str | None:
    """``"redis"`` or ``"amqp"`` (RabbitMQ) for a broker URL, ``None`` when unset or unsupported.

    Several URLs separated by ``;`` (Celery's failover list) must all be of one kind."""
    kinds = {next((name for name, schemes in BROKER_SCHEMES.items() if part.strip().startswith(schemes)), None)
             for part in (url or "").split(";")}
    return kinds.pop() if len(kinds) == 1 else None


def check_broker_url(env: str, value: str) -> str:
    if broker_kind(value) is None:
        raise SettingsError(f"{env}: expected redis://, rediss://, unix:// (Redis) or amqp://, amqps:// "
                            "(RabbitMQ) URLs, all of one kind")
    return value


def parse_search_url(env: str, value: str) -> tuple[str, str, str, int] | None:
    """SEARCH_URL: None for PostgreSQL, else Typesense's (protocol, api key, host, port).

    The one parser: settings checks a value with it at start, the search engine connects with it.
    The error never repeats the value (it holds the API key)."""
    if value.lower() in ("postgresql", "postgres"):
        return None
    scheme, sep, rest = value.partition("://")
    key, at, address = rest.rpartition("@")
    host, colon, port = address.rpartition(":")
    if not (sep and scheme in ("typesense", "typesenses") and at and key and colon and host and port.isdecimal()):
        raise SettingsError(f"{env}: expected `postgresql` or `typesense://API_KEY@host:port`")
    return ("https" if scheme == "typesenses" else "http"), key, host.strip("[]"), int(port)


@dataclass(frozen=True)
class Settings:
    # --- Services ------------------------------------------------------------
    database_url: str | None = _setting(
        "DATABASE_URL", None, "PostgreSQL URL (`postgresql://…`; the psycopg 3 driver is implied). "
        "Required in production; only the dev entry points start an embedded server without it.",
        secret=True)
    broker_url: str | None = _setting(
        "BROKER_URL", None, "Celery broker URL: Redis (`redis://…`) or RabbitMQ (`amqp://…`, quorum queues). "
        "Required in production, like DATABASE_URL.", secret=True, check=check_broker_url)
    result_backend: str | None = _setting(
        "RESULT_BACKEND", None, "Result backend URL. Default: the broker when it is Redis, "
        "else `db+DATABASE_URL`.", secret=True)
    db_pool_size: int = _setting("DB_POOL_SIZE", 5, "SQLAlchemy pool size per process.", minimum=1)
    db_max_overflow: int = _setting("DB_MAX_OVERFLOW", 5, "Connections allowed above the pool size.", minimum=0)
    db_application_name: str = _setting("DB_APPLICATION_NAME", "social-jobs",
                                        "`application_name` shown in `pg_stat_activity`.")

    # --- Files ---------------------------------------------------------------
    data_dir: Path = _setting("DATA_DIR", PROJECT_ROOT / ".data",
                              "Dev data: embedded services, logs, Flower state, beat schedule.")
    media_root: Path | None = _setting(
        "MEDIA_ROOT", None, "Uploads and photo variants. Default `$DATA_DIR/media`; "
        "a relative path is taken from the project root.")
    media_url: str = _setting("MEDIA_URL", "/media", "URL prefix written into `profile_image_url`/`image_url`.")

    # --- Delivery guarantees ---------------------------------------------------
    broker_visibility_timeout: int = _setting(
        "BROKER_VISIBILITY_TIMEOUT", 3600, "Seconds before Redis redelivers an unacked task. Must exceed the "
        "longest hard time limit and countdown; workers and beat refuse to start otherwise.", minimum=1)
    broker_heartbeat: int = _setting(
        "BROKER_HEARTBEAT_SECONDS", 30, "RabbitMQ: AMQP heartbeat. The broker closes a connection silent for about "
        "two of these and requeues its unacked messages, which is how the work of a vanished worker host comes "
        "back (0: off).", minimum=0, maximum=600)
    task_max_deliveries: int = _setting(
        "TASK_MAX_DELIVERIES", 5, "Deliveries of one task id (per retry) before it is a poison pill: "
        "dead-lettered, and its family closes out its state.", minimum=1)
    task_max_message_bytes: int = _setting(
        "TASK_MAX_MESSAGE_BYTES", 256 * 1024, "Largest task message (headers, properties and body) a worker "
        "accepts; larger ones are dead-lettered unread.", minimum=1024)
    ingest_coalesce: str = _setting(
        "INGEST_COALESCE", "ON", "`on`: the worker applies `notifications.record`, `mentions.extract` and "
        "`engagement.refresh_counts` messages in bulk, acking each after its bulk commits; `off`: one at a time.",
        choices=("ON", "OFF"))
    ingest_coalesce_max_items: int = _setting(
        "INGEST_COALESCE_MAX_ITEMS", 200, "Messages per coalesced bulk (one transaction).", minimum=1,
        maximum=500)
    ingest_coalesce_max_wait_ms: int = _setting(
        "INGEST_COALESCE_MAX_WAIT_MS", 20, "How long a message waits for bulk-mates when a pool process is free "
        "(while every process is busy, the bulk keeps growing).",
        minimum=0, maximum=1000)

    # --- Beat ------------------------------------------------------------------
    beat_lock_retry_seconds: float = _setting(
        "BEAT_LOCK_RETRY_SECONDS", 1.0, "How often a standby beat tries to take the singleton lock.",
        minimum=0.05)
    beat_heartbeat_seconds: float = _setting(
        "BEAT_HEARTBEAT_SECONDS", 30.0, "Interval of the `maintenance.beat_heartbeat` entry.", minimum=0.1)
    beat_lease_seconds: float = _setting(
        "BEAT_LEASE_SECONDS", 30.0, "Lease of the leading beat, renewed every third of it. A standby "
        "terminates the database session of a leader whose lease is older than this (hung or cut-off host) "
        "and takes over: within BEAT_LEASE_SECONDS + BEAT_LOCK_RETRY_SECONDS.", minimum=1.0)

    # --- Engagement reconciliation ---------------------------------------------
    engagement_repair_batch: int = _setting("ENGAGEMENT_REPAIR_BATCH", 1000,
                                            "Parent rows locked and recounted per statement.", minimum=1)
    engagement_dirty_batch: int = _setting("ENGAGEMENT_DIRTY_BATCH", 2000,
                                           "Dirty ids claimed per `reconcile_dirty` batch.", minimum=1)
    engagement_sweep_chunk: int = _setting("ENGAGEMENT_SWEEP_CHUNK", 100_000,
                                           "Rows per `engagement.sweep_chunk` keyset range.", minimum=1)
    engagement_sweep_connections: int = _setting(
        "ENGAGEMENT_SWEEP_CONNECTIONS", 2, "Chunks `reconcile --full` runs at once, each on its own "
        "database connection (the Celery sweep spreads its chunks over the worker's processes instead).",
        minimum=1, maximum=16)
    engagement_lock_timeout_ms: int = _setting("ENGAGEMENT_LOCK_TIMEOUT_MS", 2000,
                                               "`lock_timeout` of repair statements.", minimum=1)
    engagement_statement_timeout_ms: int = _setting("ENGAGEMENT_STATEMENT_TIMEOUT_MS", 10_000,
                                                    "`statement_timeout` of repair statements.", minimum=1)
    engagement_work_mem: str = _setting("ENGAGEMENT_WORK_MEM", "32MB", "`work_mem` of the sweep's aggregates.")
    engagement_sweep_stale_after: int = _setting(
        "ENGAGEMENT_SWEEP_STALE_AFTER", 6 * 3600,
        "Seconds after which a `running` counter run is presumed dead and closed.", minimum=1)
    engagement_dirty_budget_seconds: float = _setting(
        "ENGAGEMENT_DIRTY_BUDGET_SECONDS", 20.0, "Time budget of one `reconcile_dirty` run.", minimum=0.1)

    # --- Feed ------------------------------------------------------------------
    feed_size: int = _setting("FEED_SIZE", 100, "Items kept per user feed.", minimum=1)
    feed_ttl_hours: float = _setting("FEED_TTL_HOURS", 24.0, "Hours a feed item lives before expiry.",
                                     minimum=0.01)
    feed_score_chunk_size: int = _setting("FEED_SCORE_CHUNK_SIZE", 250, "Users per `feed.score_users` task.",
                                          minimum=1)

    # --- Notification delivery (email, push, digests) -----------------------------
    smtp_url: str | None = _setting(
        "SMTP_URL", None, "`smtp://user:password@host:587` (STARTTLS when the server offers it) or `smtps://…` "
        "(TLS from the start). Unset: no email is planned and `status` says so; the dev runner starts a sink.",
        secret=True)
    mail_from: str = _setting("MAIL_FROM", "Grateful <notifications@localhost>", "From address of every email.")
    vapid_private_key: str | None = _setting(
        "VAPID_PRIVATE_KEY", None, "VAPID signing key for Web Push: a PEM file path, PEM text or base64url DER. "
        "Unset: no push is planned. The dev runner generates one under `$DATA_DIR/vapid/`.", secret=True)
    vapid_subject: str = _setting("VAPID_SUBJECT", "mailto:ops@localhost",
                                  "VAPID `sub` claim: a `mailto:` or `https:` contact for push services.")
    delivery_settle_seconds: float = _setting(
        "DELIVERY_SETTLE_SECONDS", 120.0, "A normal-priority notification is sent once its batch has been quiet "
        "this long.", minimum=0)
    push_max_per_hour: int = _setting("PUSH_MAX_PER_HOUR", 10, "Pushes per user per hour; the rest fold into "
                                      "the digest.", minimum=0)
    delivery_dispatch_chunk: int = _setting("DELIVERY_DISPATCH_CHUNK", 500, "Notifications planned and "
                                            "deliveries claimed per `delivery.dispatch_due` statement.", minimum=1)
    unsubscribe_secret: str | None = _setting(
        "UNSUBSCRIBE_SECRET", None, "HMAC key of the `List-Unsubscribe` tokens (32+ characters). Required "
        "with SMTP_URL; the dev runner generates one under `$DATA_DIR/`.", secret=True)
    web_base_url: str = _setting(
        "WEB_BASE_URL", "http://localhost:8000", "The web tier's address, for links in emails and pushes: "
        "`/notifications` and the one-click `/notifications/unsubscribe?token=…`.")
    delivery_retry_seconds: float = _setting(
        "DELIVERY_RETRY_SECONDS", 30.0, "First retry delay after an SMTP 4xx or a push 429/5xx without "
        "Retry-After; doubles per retry (with jitter) up to 10 minutes.", minimum=0)

    # --- Upkeep: partitions, retention, purge, backups ----------------------------
    retention_days: str = _setting(
        "RETENTION_DAYS", "", "Overrides of the retention periods, `name=days[,name=days…]` with names from the "
        "retention table (`user_sessions=45,audit_log=120`). Unknown names and negative days are refused.",
        check=name_days_pairs)
    purge_soft_deleted_days: int = _setting(
        "PURGE_SOFT_DELETED_DAYS", 30, "Days a soft-deleted post, comment or user is kept before "
        "`upkeep.purge_soft_deleted` deletes it for good.", minimum=1)
    upkeep_batch_rows: int = _setting("UPKEEP_BATCH_ROWS", 5000, "Rows deleted per retention or purge "
                                      "transaction.", minimum=1, maximum=5000)
    upkeep_lock_timeout_ms: int = _setting("UPKEEP_LOCK_TIMEOUT_MS", 2000, "`lock_timeout` of retention, "
                                           "purge and partition statements.", minimum=1)
    backup_root: Path | None = _setting(
        "BACKUP_ROOT", None, "Folder of the encrypted backups. Default `$DATA_DIR/backups`; a relative path "
        "is taken from the project root.")
    backup_key: str | None = _setting(
        "BACKUP_KEY", None, "age identity (`AGE-SECRET-KEY-1…`) or the path of a file holding it: backups are "
        "encrypted to its public key and `backup verify` decrypts with it. Unset: `upkeep.backup` fails "
        "with `backup_not_configured`; the dev runner generates one under `$DATA_DIR/`.", secret=True)
    backup_keep_daily: int = _setting("BACKUP_KEEP_DAILY", 7, "Days whose newest backup is kept.", minimum=1)
    backup_keep_weekly: int = _setting("BACKUP_KEEP_WEEKLY", 4, "ISO weeks whose newest backup is kept.",
                                       minimum=0)
    pg_bin_dir: Path | None = _setting(
        "PG_BIN_DIR", None, "Folder of `pg_dump`/`pg_restore`. Default: the bundled PostgreSQL 16 client "
        "(pgserver), else the `PATH`.")

    # --- Analytics ---------------------------------------------------------------
    analytics_redis_url: str | None = _setting(
        "ANALYTICS_REDIS_URL", None, "Redis of the web tier's view counters (`tasks/analytics/client.py`) and "
        "of `analytics.flush_counters`. Default: the broker's Redis (never evicting, as counters need).",
        secret=True)
    analytics_grace_hours: float = _setting(
        "ANALYTICS_GRACE_HOURS", 2.0, "Hours after midnight UTC before `analytics.rollup_daily` finalises the "
        "day before (late events are still counted after that, by a re-run).", minimum=0, maximum=48)
    trending_min_users: int = _setting(
        "TRENDING_MIN_USERS", 3, "Distinct users a tag needs in the last 24 h to trend.", minimum=1)

    # --- Moderation ---------------------------------------------------------------
    moderation_hide_threshold: float = _setting(
        "MODERATION_HIDE_THRESHOLD", 0.8, "`automated_score` above which `moderation.score_content` flags a post "
        "or comment and hides it from every reader until a moderator decides.", minimum=0, maximum=1)

    # --- Search ------------------------------------------------------------------
    search_url: str | None = _setting(
        "SEARCH_URL", None, "Search engine: unset or `postgresql` for PostgreSQL full-text (the default; nothing "
        "to install), or `typesense://API_KEY@host:port` (`typesenses://…` for HTTPS) for a Typesense server.",
        secret=True, check=parse_search_url)
    search_batch: int = _setting("SEARCH_BATCH", 1000, "Dirty marks claimed per `search.index_dirty` batch, and "
                                 "posts per reindex chunk.", minimum=1, maximum=10_000)
    search_dirty_budget_seconds: float = _setting(
        "SEARCH_DIRTY_BUDGET_SECONDS", 20.0, "Time budget of one `search.index_dirty` run.", minimum=0.1)

    # --- Cache ---------------------------------------------------------------------
    cache_url: str | None = _setting(
        "CACHE_URL", None, "Redis of the web tier's cache keys (`user:{id}`, `feed:{id}:page:{n}`, …). The dev "
        "entry points use database 2 of the embedded Redis; production should give the cache its own instance "
        "(`maxmemory-policy allkeys-lru`; the broker's must stay `noeviction`). Unset: no cache is kept and "
        "nothing is enqueued for it.", secret=True)
    cache_active_minutes: float = _setting(
        "CACHE_ACTIVE_MINUTES", 15.0, "Users active this recently are warmed by `cache.warm_active`.", minimum=1)
    cache_warm_budget_seconds: float = _setting(
        "CACHE_WARM_BUDGET_SECONDS", 60.0, "Time budget of one `cache.warm_active` run.", minimum=0.1)

    # --- Operator endpoints and logs -------------------------------------------
    flower_basic_auth: str | None = _setting(
        "FLOWER_BASIC_AUTH", None, "`user:password[,user:password…]` for Flower. Generated when unset "
        "(loopback only).", secret=True)
    flower_max_tasks: int = _setting("FLOWER_MAX_TASKS", 10_000, "Tasks Flower keeps in memory.", minimum=1)
    flower_port: int = _setting("FLOWER_PORT", 5555, "Flower's port in the dev runner.", minimum=1)
    exporter_port: int = _setting("EXPORTER_PORT", 9808, "The metrics exporter's port in the dev runner.",
                                  minimum=1)
    exporter_basic_auth: str | None = _setting(
        "EXPORTER_BASIC_AUTH", None, "`user:password[,user:password…]` for the metrics exporter. Required to "
        "bind a non-loopback address; unset, a loopback exporter serves without auth.", secret=True)
    exporter_cache_seconds: float = _setting(
        "EXPORTER_CACHE_SECONDS", 5.0, "Seconds the exporter serves one read of Redis and PostgreSQL to every "
        "scrape.", minimum=1)
    log_level: str = _setting("LOG_LEVEL", "INFO", "Root log level.",
                              choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))

    # --- Derived ---------------------------------------------------------------
    @property
    def sqlalchemy_database_url(self) -> str | None:
        """DATABASE_URL with the psycopg 3 driver named, as operators paste plain ``postgresql://``."""
        url = self.database_url
        if url is None:
            return None
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix):]
        return url

    @property
    def libpq_database_url(self) -> str | None:
        url = self.sqlalchemy_database_url
        return url.replace("postgresql+psycopg://", "postgresql://", 1) if url else None

    @property
    def result_backend_url(self) -> str | None:
        if self.result_backend:
            return self.result_backend
        if not self.broker_url:
            return None  # a process without a broker must refuse to start, not create result tables
        if broker_kind(self.broker_url) == "redis":
            return self.broker_url
        return "db+" + self.sqlalchemy_database_url if self.database_url else None

    @property
    def media_path(self) -> Path:
        if self.media_root is None:
            return self.data_dir / "media"
        return (self.media_root if self.media_root.is_absolute() else PROJECT_ROOT / self.media_root).resolve()

    @property
    def backup_path(self) -> Path:
        if self.backup_root is None:
            return self.data_dir / "backups"
        return (self.backup_root if self.backup_root.is_absolute() else PROJECT_ROOT / self.backup_root).resolve()

    @property
    def feed_ttl_seconds(self) -> float:
        return self.feed_ttl_hours * 3600


_FIELDS = fields(Settings)
ENV_NAMES = tuple(f.metadata["env"] for f in _FIELDS)


def _parse(spec, raw: str) -> Any:
    env, kind = spec.metadata["env"], spec.type
    text = raw.strip()
    try:
        if kind in ("int",):
            value: Any = int(text)
        elif kind in ("float",):
            value = float(text)
        elif kind in ("Path", "Path | None"):
            value = Path(text)
        else:
            value = text
    except ValueError:
        raise SettingsError(f"{env}={raw!r} is not {'an integer' if kind == 'int' else 'a number'}") from None
    minimum = spec.metadata["minimum"]
    if minimum is not None and value < minimum:
        raise SettingsError(f"{env}={raw!r} is below its minimum {minimum:g}")
    check = spec.metadata["check"]
    if check is not None:
        check(env, value)
    maximum = spec.metadata["maximum"]
    if maximum is not None and value > maximum:
        raise SettingsError(f"{env}={raw!r} is above its maximum {maximum:g}")
    choices = spec.metadata["choices"]
    if choices is not None:
        value = value.upper()
        if value not in choices:
            raise SettingsError(f"{env}={raw!r} is not one of {', '.join(choices)}")
    return value


def load(environ: dict[str, str] | None = None) -> Settings:
    """Parse the environment; an empty variable counts as unset."""
    environ = os.environ if environ is None else environ
    values = {}
    for spec in _FIELDS:
        raw = environ.get(spec.metadata["env"])
        if raw is not None and raw.strip() != "":
            values[spec.name] = _parse(spec, raw)
    return Settings(**values)


_lock = threading.Lock()
_cache: tuple[tuple, Settings] | None = None


# os.environ decodes every value it returns; its underlying mapping, keyed by the
# encoded names, is what a cheap snapshot compares (2 µs instead of 24 µs a call).
_RAW_ENVIRON = getattr(os.environ, "_data", None)
_RAW_NAMES = tuple(os.environ.encodekey(name) for name in ENV_NAMES) if _RAW_ENVIRON is not None else ()


def _snapshot() -> tuple:
    if _RAW_ENVIRON is not None:
        return tuple(map(_RAW_ENVIRON.get, _RAW_NAMES))
    return tuple(os.environ.get(name) for name in ENV_NAMES)


def current() -> Settings:
    """The settings for the environment as it is now (cached until a variable changes)."""
    global _cache
    snapshot = _snapshot()
    cached = _cache
    if cached is not None and cached[0] == snapshot:
        return cached[1]
    with _lock:
        parsed = load()
        _cache = (snapshot, parsed)
    return parsed


def require_services(what: str = "this process", names: tuple[str, ...] = SERVICE_URLS) -> Settings:
    """Fail fast, with what to do, when DATABASE_URL or BROKER_URL is unset.

    A production worker that lost its environment must not run against some
    local default and report healthy; only the dev entry points start the
    embedded services, and they pass the URLs to their children.
    """
    found = current()
    missing = [name for name in names if not getattr(found, name.lower())]
    if missing:
        raise MissingServices(
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set, so {what} cannot start. "
            "In production set them, e.g. DATABASE_URL=postgresql://user:password@host/db and "
            "BROKER_URL=redis://host:6379/0. For a local system with embedded PostgreSQL and Redis, run "
            "`make run`, or opt in for one command with `python -m workers services exec -- COMMAND`.")
    return found


def mask_url(url: str | None) -> str:
    """A URL with its password replaced by ``***``, for anything printed or logged."""
    if not url:
        return "<unset>"
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user, has_password, _password = credentials.partition(":")
    return f"{scheme}://{user}{':***' if has_password else ''}@{host}"


def settings_table() -> str:
    """The Markdown table of every setting, as docs/operations.md carries it."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for spec in _FIELDS:
        default = spec.default
        if isinstance(default, Path):
            default = os.path.relpath(default, PROJECT_ROOT) if default.is_relative_to(PROJECT_ROOT) else default
        shown = "unset" if default is None else f"`{default}`"
        rows.append(f"| `{spec.metadata['env']}` | {shown} | {spec.metadata['doc']} |")
    return "\n".join(rows)
