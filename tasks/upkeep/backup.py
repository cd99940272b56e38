"""Encrypted nightly backups, proven by a restore.

``create`` runs ``pg_dump -Fc`` of DATABASE_URL and streams its output through
age encryption (pyrage: X25519 + ChaCha20-Poly1305, the key from BACKUP_KEY)
into ``BACKUP_ROOT/backup-<UTC time>.dump.age``: no plaintext touches the disk,
and memory stays flat whatever the size. The dump and the per-table row counts
recorded in the manifest beside it come from one exported snapshot, so they
describe the same moment exactly.

``verify`` restores a backup into a scratch database on the same server and
compares every table's row count with the manifest; a backup that does not
restore, or restores different counts, is an error that ``status`` shows.
``rotate`` keeps the newest backup of each of the last BACKUP_KEEP_DAILY days
and of the last BACKUP_KEEP_WEEKLY ISO weeks.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path
from time import monotonic

import pyrage
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

import settings
from workers.private_files import write_private
from workers.errors import JobError

SUFFIX = ".dump.age"
NAME_FORMAT = "backup-%Y%m%dT%H%M%SZ"
VERIFY_PREFIX = "upkeep_verify_"
# The tables of the dump, counted in its snapshot: every plain table and leaf partition of ours.
TABLES_SQL = text(
    "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 1")


class BackupNotConfigured(JobError):
    code = "backup_not_configured"


class BackupFailed(JobError):
    code = "backup_failed"


class BackupUnverified(JobError):
    code = "backup_unverified"


def pg_tool(name: str) -> str:
    """``pg_dump``/``pg_restore``: PG_BIN_DIR, else the bundled PostgreSQL 16 client, else the PATH."""
    configured = settings.current().pg_bin_dir
    candidates = [configured / name] if configured else []
    if not configured:
        try:
            import pgserver

            candidates.append(Path(pgserver.__file__).parent / "pginstall" / "bin" / name)
        except ImportError:
            pass
        found = shutil.which(name)
        candidates += [Path(found)] if found else []
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise BackupNotConfigured(f"{name} was not found (set PG_BIN_DIR to the folder holding it)")


def identity() -> pyrage.x25519.Identity:
    """The age identity of BACKUP_KEY (the key itself, or a file holding it)."""
    raw = settings.current().backup_key
    if not raw:
        raise BackupNotConfigured("BACKUP_KEY is not set: backups are encrypted to it and cannot be made without it")
    value = raw.strip()
    if not value.startswith("AGE-SECRET-KEY-"):
        path = Path(value)
        if not path.is_file():
            raise BackupNotConfigured("BACKUP_KEY is neither an age secret key (AGE-SECRET-KEY-1…) nor a readable file")
        value = path.read_text().strip()
    try:
        return pyrage.x25519.Identity.from_str(value)
    except Exception:  # noqa: BLE001 - pyrage raises its own IdentityError; never echo the key
        raise BackupNotConfigured("BACKUP_KEY does not hold a valid age X25519 secret key") from None


def new_identity_text() -> bytes:
    """A fresh age secret key (the dev runner's BACKUP_KEY)."""
    return str(pyrage.x25519.Identity.generate()).encode()


def root() -> Path:
    path = settings.current().backup_path
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _libpq(url: str) -> tuple[list[str], dict[str, str]]:
    """Connection arguments without the password (it goes in the environment, not the process list)."""
    parsed = make_url(url)
    args = ["--dbname", parsed.database or "postgres"]
    # A Unix socket (the embedded server's URL) comes as ?host=/path instead of a host name.
    host = parsed.host or parsed.query.get("host")
    port = parsed.port or parsed.query.get("port")
    if host:
        args += ["--host", str(host)]
    if port:
        args += ["--port", str(port)]
    if parsed.username:
        args += ["--username", parsed.username]
    # The children get no secrets of ours: the key stays in this process.
    env = {k: v for k, v in os.environ.items() if k not in ("BACKUP_KEY", "DATABASE_URL", "UNSUBSCRIBE_SECRET",
                                                            "VAPID_PRIVATE_KEY", "SMTP_URL")}
    env["PGAPPNAME"] = "social-jobs-backup"
    if parsed.password:
        env["PGPASSWORD"] = parsed.password
    return args, env


def _database_url() -> str:
    from db.session import database_url

    return database_url()


def _counts(connection) -> dict[str, int]:
    names = list(connection.execute(TABLES_SQL).scalars())
    return {name: connection.execute(text(f'SELECT count(*) FROM "{name}"')).scalar_one() for name in names}


def _pump(function, *args) -> tuple[threading.Thread, list]:
    errors: list = []

    def run() -> None:
        try:
            function(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def create(now: datetime | None = None) -> dict:
    """Dump, encrypt and record one backup; returns its manifest."""
    now = now or datetime.now(timezone.utc)
    recipient = identity().to_public()
    pg_dump = pg_tool("pg_dump")
    folder = root()
    name = now.strftime(NAME_FORMAT)
    final, partial = folder / f"{name}{SUFFIX}", folder / f".{name}{SUFFIX}.partial"
    url = _database_url()
    args, env = _libpq(url)
    engine = create_engine(url, isolation_level="REPEATABLE READ", pool_size=1)
    started = monotonic()
    try:
        with engine.connect() as connection:
            connection.execute(text("SET TRANSACTION READ ONLY"))
            snapshot = connection.execute(text("SELECT pg_export_snapshot()")).scalar_one()
            process = subprocess.Popen([pg_dump, "--format=custom", f"--snapshot={snapshot}", *args],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                pump, errors = _pump(pyrage.encrypt_io, process.stdout, out, [recipient])
                try:
                    counts = _counts(connection)  # in the dump's snapshot, while pg_dump runs
                except BaseException:
                    process.kill()
                    process.wait()
                    raise
                pump.join()
                stderr = process.stderr.read().decode(errors="replace")
                code = process.wait()
                out.flush()
                os.fsync(out.fileno())
            connection.rollback()
        if code != 0 or errors:
            reason = stderr.strip().splitlines()[-1] if stderr.strip() else repr(errors[0] if errors else code)
            raise BackupFailed(f"pg_dump failed (exit {code}): {reason[:300]}")
        os.replace(partial, final)
    finally:
        engine.dispose()
        partial.unlink(missing_ok=True)
    manifest = {"file": final.name, "created_at": now.isoformat(), "bytes": final.stat().st_size,
                "seconds": round(monotonic() - started, 3), "tables": counts,
                "rows": sum(counts.values()), "pg_dump": _version(pg_dump)}
    write_private(final.with_name(final.name.removesuffix(SUFFIX) + ".json"), json.dumps(manifest, indent=1).encode())
    return manifest


def _version(tool: str) -> str:
    return subprocess.run([tool, "--version"], capture_output=True, text=True, check=False).stdout.strip()


def backups(folder: Path | None = None) -> list[tuple[datetime, Path]]:
    """Finished backups (with their manifest), oldest first."""
    folder = folder or root()
    found = []
    for path in folder.glob(f"backup-*{SUFFIX}"):
        try:
            taken = datetime.strptime(path.name.removesuffix(SUFFIX), NAME_FORMAT).replace(tzinfo=timezone.utc)
        except ValueError:
            continue
        if _manifest_path(path).is_file():
            found.append((taken, path))
    return sorted(found)


def _manifest_path(backup: Path) -> Path:
    return backup.with_name(backup.name.removesuffix(SUFFIX) + ".json")


def rotate(folder: Path | None = None) -> list[str]:
    """Keep the newest backup of each of the last N days and M ISO weeks; delete the rest."""
    found = settings.current()
    ordered = list(reversed(backups(folder)))  # newest first
    keep: set[Path] = set()
    days: list = []
    weeks: list = []
    for taken, path in ordered:
        day, week = taken.date(), taken.isocalendar()[:2]
        if day not in days and len(days) < found.backup_keep_daily:
            days.append(day)
            keep.add(path)
        if week not in weeks and len(weeks) < found.backup_keep_weekly:
            weeks.append(week)
            keep.add(path)
    deleted = []
    for _taken, path in ordered:
        if path not in keep:
            path.unlink(missing_ok=True)
            _manifest_path(path).unlink(missing_ok=True)
            deleted.append(path.name)
    return sorted(deleted)


def verify(backup: Path | None = None) -> dict:
    """Restore ``backup`` (default: the newest) into a scratch database and compare row counts."""
    if backup is None:
        found = backups()
        if not found:
            raise BackupUnverified(f"no backup to verify in {root()}")
        backup = found[-1][1]
    try:
        manifest = json.loads(_manifest_path(backup).read_text())
        manifest["tables"].items()
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BackupUnverified(f"{backup.name} has no readable manifest ({type(exc).__name__})") from None
    key = identity()
    pg_restore = pg_tool("pg_restore")
    url = make_url(_database_url())
    scratch_name = f"{VERIFY_PREFIX}{uuid.uuid4().hex[:12]}"
    scratch: URL = url.set(database=scratch_name)
    admin = create_engine(url, isolation_level="AUTOCOMMIT", pool_size=1)
    started = monotonic()
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{scratch_name}"'))
        args, env = _libpq(scratch.render_as_string(hide_password=False))
        process = subprocess.Popen([pg_restore, "--no-owner", "--no-privileges", "--exit-on-error", *args],
                                   stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        with open(backup, "rb") as source:
            pump, errors = _pump(_decrypt_into, source, process.stdin, key)
            stderr = process.stderr.read().decode(errors="replace")
            pump.join()
            code = process.wait()
        if errors and not isinstance(errors[0], BrokenPipeError):
            raise BackupUnverified(f"{backup.name} does not decrypt with BACKUP_KEY ({type(errors[0]).__name__})")
        if code != 0:
            reason = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {code}"
            raise BackupUnverified(f"{backup.name} does not restore: {reason[:300]}")
        engine = create_engine(scratch, pool_size=1)
        try:
            with engine.connect() as connection:
                restored = _counts(connection)
        finally:
            engine.dispose()
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{scratch_name}" WITH (FORCE)'))
        admin.dispose()
    expected = manifest["tables"]
    differ = {name: {"recorded": expected.get(name), "restored": restored.get(name)}
              for name in sorted(set(expected) | set(restored)) if expected.get(name) != restored.get(name)}
    if differ:
        raise BackupUnverified(f"{backup.name} restored with other row counts than recorded: "
                               f"{json.dumps(differ)[:400]}")
    return {"file": backup.name, "tables": len(restored), "rows": sum(restored.values()),
            "seconds": round(monotonic() - started, 3)}


def _decrypt_into(source, sink, key) -> None:
    try:
        pyrage.decrypt_io(source, sink, [key])
    finally:
        sink.close()
