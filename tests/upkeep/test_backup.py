"""Encrypted backups (tasks/upkeep/backup.py) on the real PostgreSQL server: pg_dump through age
into BACKUP_ROOT, proven by a restore into a scratch database; rotation; bad keys; a failing
pg_dump; and the operator CLI."""
from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import traceback
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyrage
import pytest
from sqlalchemy import text

from tasks.upkeep import backup, jobs

ROOT = Path(__file__).resolve().parents[2]
AGE_MAGIC = b"age-encryption.org"
PGDUMP_MAGIC = b"PGDMP"


def add_rows(engine, users: int = 3, posts_each: int = 2) -> None:
    with engine.begin() as connection:
        ids = list(connection.execute(text(
            "INSERT INTO users (email, username, hashed_password) "
            "SELECT 'b' || g || '@example.com', 'b' || g, '!' FROM generate_series(1, :n) g RETURNING id"),
            {"n": users}).scalars())
        connection.execute(text(
            "INSERT INTO posts (author_id, content) SELECT a, 'post ' || g "
            "FROM unnest(CAST(:a AS integer[])) a, generate_series(1, :n) g"), {"a": ids, "n": posts_each})


def real_counts(engine, tables) -> dict[str, int]:
    with engine.connect() as connection:
        return {t: connection.execute(text(f'SELECT count(*) FROM "{t}"')).scalar_one() for t in tables}


def plain_tables(engine) -> set[str]:
    """Every ordinary table of ours (partitioned parents excluded: their rows live in partitions)."""
    with engine.connect() as connection:
        return set(connection.execute(text(
            "SELECT tablename FROM pg_tables t WHERE schemaname = 'public' AND NOT EXISTS "
            "(SELECT 1 FROM pg_partitioned_table p WHERE p.partrelid = format('public.%I', t.tablename)::regclass)"
        )).scalars())


def scratch_databases(engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.execute(text(
            "SELECT datname FROM pg_database WHERE datname LIKE :p"), {"p": backup.VERIFY_PREFIX + "%"}).scalars())


@pytest.fixture
def scratch_names(monkeypatch) -> list[str]:
    """The scratch databases verify() creates in this test (so that another run's verify on the
    same server cannot be mistaken for ours)."""
    names: list[str] = []
    real = backup.text

    def recording(statement: str):
        match = re.fullmatch(r'CREATE DATABASE "(.+)"', statement)
        if match:
            names.append(match.group(1))
        return real(statement)

    monkeypatch.setattr(backup, "text", recording)
    return names


def left_over(engine, names: list[str]) -> list[str]:
    with engine.connect() as connection:
        return list(connection.execute(text(
            "SELECT datname FROM pg_database WHERE datname = ANY(:n)"), {"n": names}).scalars())


def manifest_of(dump: Path) -> Path:
    return dump.with_name(dump.name.removesuffix(backup.SUFFIX) + ".json")


def upkeep_runs(engine, job: str) -> list:
    with engine.connect() as connection:
        return connection.execute(text(
            "SELECT status, details FROM upkeep_runs WHERE job = :j ORDER BY finished_at"), {"j": job}).all()


# --- round trip -----------------------------------------------------------------------

def test_backup_round_trip_encrypted_counted_and_restore_verified(fresh, backup_env, scratch_names):
    add_rows(fresh, users=3, posts_each=2)
    counts = real_counts(fresh, plain_tables(fresh))  # before the job records its own runs

    report = jobs.make_backup()

    assert report["status"] == "ok"
    folder = Path(os.environ["BACKUP_ROOT"])
    dumps = sorted(folder.glob(f"*{backup.SUFFIX}"))
    assert [d.name for d in dumps] == [report["file"]]
    dump = dumps[0]
    data = dump.read_bytes()
    assert not data.startswith(PGDUMP_MAGIC)
    assert data.startswith(AGE_MAGIC)
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600
    assert report["bytes"] == len(data)
    # Decrypted with the identity it is a real pg_dump custom-format archive.
    assert pyrage.decrypt(data, [backup_env]).startswith(PGDUMP_MAGIC)
    assert not list(folder.glob("*.partial")) and not list(folder.glob(".*"))

    manifest = json.loads(manifest_of(dump).read_text())
    assert manifest["file"] == dump.name
    assert manifest["tables"] == counts
    assert manifest["tables"]["users"] == 3 and manifest["tables"]["posts"] == 6
    assert manifest["rows"] == sum(manifest["tables"].values())

    # The first backup is verified at once (no verification on record yet).
    assert report["verify"]["status"] == "ok"
    assert report["verify"]["rows"] == manifest["rows"]
    assert report["verify"]["tables"] == len(manifest["tables"])
    assert [r.status for r in upkeep_runs(fresh, "backup")] == ["ok"]
    assert [r.status for r in upkeep_runs(fresh, "backup_verify")] == ["ok"]

    verified = backup.verify(dump)
    assert verified["file"] == dump.name
    assert verified["rows"] == manifest["rows"] and verified["tables"] == len(manifest["tables"])
    assert len(scratch_names) == 2  # one scratch database per verification, both dropped
    assert left_over(fresh, scratch_names) == []


def test_tampered_manifest_fails_verification_and_shows_in_health(fresh, backup_env, scratch_names):
    add_rows(fresh, users=2, posts_each=1)
    manifest = backup.create()
    dump = Path(os.environ["BACKUP_ROOT"]) / manifest["file"]
    recorded = json.loads(manifest_of(dump).read_text())
    recorded["tables"]["users"] += 1
    manifest_of(dump).write_text(json.dumps(recorded))

    with pytest.raises(backup.BackupUnverified) as caught:
        backup.verify(dump)
    assert caught.value.code == "backup_unverified"
    assert "users" in caught.value.message
    assert len(scratch_names) == 1 and left_over(fresh, scratch_names) == []

    with pytest.raises(backup.BackupUnverified):
        jobs.verify_backup()
    runs = upkeep_runs(fresh, "backup_verify")
    assert [r.status for r in runs] == ["failed"]
    assert runs[0].details["error"]["error_code"] == "backup_unverified"
    assert len(scratch_names) == 2 and left_over(fresh, scratch_names) == []

    _state, problems = jobs.health()
    assert _state["backup_verify"]["status"] == "failed"
    assert any("backup_verify" in p for p in problems), problems


def test_wrong_key_does_not_decrypt(fresh, backup_env, monkeypatch, scratch_names):
    manifest = backup.create()
    monkeypatch.setenv("BACKUP_KEY", str(pyrage.x25519.Identity.generate()))
    with pytest.raises(backup.BackupUnverified, match="does not decrypt"):
        backup.verify()
    assert manifest["file"]
    assert len(scratch_names) == 1 and left_over(fresh, scratch_names) == []


# --- the key ---------------------------------------------------------------------------

def test_missing_key_is_not_configured(fresh, backup_env, monkeypatch):
    monkeypatch.delenv("BACKUP_KEY")
    with pytest.raises(backup.BackupNotConfigured) as caught:
        backup.create()
    assert caught.value.code == "backup_not_configured"
    assert "BACKUP_KEY" in caught.value.message
    folder = Path(os.environ["BACKUP_ROOT"])
    assert not folder.exists() or not any(folder.iterdir())


@pytest.mark.parametrize("garbage", [
    "AGE-SECRET-KEY-1SUPERSECRETBUTNOTAKEY0000000000000000000000000000000000000",  # looks like a key
    "hunter2-totally-secret-passphrase",                                            # neither key nor file
])
def test_garbage_key_is_not_configured_and_never_echoed(fresh, backup_env, monkeypatch, garbage):
    monkeypatch.setenv("BACKUP_KEY", garbage)
    with pytest.raises(backup.BackupNotConfigured) as caught:
        backup.create()
    assert caught.value.code == "backup_not_configured"
    for shown in (str(caught.value), caught.value.message, repr(caught.value), json.dumps(caught.value.as_dict())):
        assert garbage not in shown
        assert "SUPERSECRET" not in shown and "hunter2" not in shown
    # Nor in the traceback a log would print (no chained pyrage error quoting it).
    assert garbage not in "".join(traceback.format_exception(caught.value))

    # The failed run is recorded, without the key either.
    with pytest.raises(backup.BackupNotConfigured):
        jobs.make_backup()
    runs = upkeep_runs(fresh, "backup")
    assert [r.status for r in runs] == ["failed"]
    assert garbage not in json.dumps(runs[0].details)
    assert runs[0].details["error"]["error_code"] == "backup_not_configured"


def test_key_file_path_works(fresh, backup_env, monkeypatch, tmp_path):
    key_file = tmp_path / "backup.key"
    key_file.write_text(str(backup_env) + "\n")
    monkeypatch.setenv("BACKUP_KEY", str(key_file))
    add_rows(fresh, users=1, posts_each=1)

    manifest = backup.create()
    dump = Path(os.environ["BACKUP_ROOT"]) / manifest["file"]
    assert pyrage.decrypt(dump.read_bytes(), [backup_env]).startswith(PGDUMP_MAGIC)
    assert backup.verify(dump)["rows"] == manifest["rows"]


def test_key_file_with_garbage_is_not_configured(fresh, backup_env, monkeypatch, tmp_path):
    key_file = tmp_path / "backup.key"
    key_file.write_text("not-a-key-but-private-text\n")
    monkeypatch.setenv("BACKUP_KEY", str(key_file))
    with pytest.raises(backup.BackupNotConfigured) as caught:
        backup.create()
    assert "not-a-key-but-private-text" not in str(caught.value)


# --- rotation --------------------------------------------------------------------------

def make_fake_backups(folder: Path, end: datetime, days: int = 40,
                      hours: tuple[int, ...] = (1, 9, 17, 23)) -> list[datetime]:
    folder.mkdir(parents=True, exist_ok=True)
    taken = []
    for day in range(days):
        for hour in hours:
            moment = (end - timedelta(days=day)).replace(hour=hour, minute=7, second=day % 60)
            name = moment.strftime("backup-%Y%m%dT%H%M%SZ")
            (folder / f"{name}.dump.age").write_bytes(b"")
            (folder / f"{name}.json").write_text("{}")
            taken.append(moment)
    return sorted(taken)


def expected_kept(taken: list[datetime], daily: int, weekly: int) -> set[datetime]:
    """Written out independently: group by day and by ISO week, newest of each of the last N groups."""
    by_day: dict = {}
    by_week: dict = {}
    for moment in taken:
        by_day.setdefault(moment.date(), []).append(moment)
        iso = moment.isocalendar()
        by_week.setdefault((iso.year, iso.week), []).append(moment)
    kept = {max(by_day[d]) for d in sorted(by_day)[-daily:]}
    kept |= {max(by_week[w]) for w in sorted(by_week)[-weekly:]}
    return kept


def remaining(folder: Path) -> tuple[set[datetime], set[str]]:
    dumps = {datetime.strptime(p.name.removesuffix(".dump.age"), "backup-%Y%m%dT%H%M%SZ").replace(
        tzinfo=timezone.utc) for p in folder.glob("backup-2*.dump.age")}
    manifests = {p.name.removesuffix(".json") for p in folder.glob("backup-2*.json")}
    return dumps, manifests


# Ends on a Sunday across a year end: ISO week 2025-W01 starts on 2024-12-30.
ROTATION_END = datetime(2025, 1, 5, tzinfo=timezone.utc)


@pytest.mark.parametrize("daily, weekly", [(None, None), (3, 2), (10, 5)])
def test_rotate_keeps_newest_of_last_days_and_weeks(tmp_path, monkeypatch, daily, weekly):
    folder = tmp_path / "backups"
    monkeypatch.setenv("BACKUP_ROOT", str(folder))
    for name, value in (("BACKUP_KEEP_DAILY", daily), ("BACKUP_KEEP_WEEKLY", weekly)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, str(value))
    taken = make_fake_backups(folder, ROTATION_END)
    stranger = folder / "backup-notatime.dump.age"
    stranger.write_bytes(b"")
    want = expected_kept(taken, daily or 7, weekly or 4)
    if daily is None:
        # The defaults, spelled out: the newest of each of the last 7 days (Dec 30 .. Jan 5, one ISO
        # week) and of each of the last 4 ISO weeks (their Sundays, Jan 5 being both).
        assert len(want) == 7 + 3

    deleted = backup.rotate(folder)

    dumps, manifests = remaining(folder)
    assert dumps == want
    assert manifests == {m.strftime("backup-%Y%m%dT%H%M%SZ") for m in want}
    assert len(deleted) == len(taken) - len(want)
    assert deleted == sorted(deleted)
    assert stranger.exists()  # not one of ours by name: never deleted
    assert backup.rotate(folder) == []  # idempotent


# --- a failing pg_dump -------------------------------------------------------------------

def test_failed_pg_dump_leaves_nothing(fresh, backup_env, monkeypatch, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "pg_dump"
    fake.write_text("#!/bin/sh\nprintf 'PGDMP partial'\necho 'pg_dump: error: connection to server lost' >&2\n"
                    "exit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PG_BIN_DIR", str(bin_dir))

    with pytest.raises(backup.BackupFailed) as caught:
        backup.create()
    assert caught.value.code == "backup_failed"
    assert "connection to server lost" in caught.value.message
    assert "exit 1" in caught.value.message
    folder = Path(os.environ["BACKUP_ROOT"])
    assert sorted(p.name for p in folder.iterdir()) == []

    with pytest.raises(backup.BackupFailed):
        jobs.make_backup()
    assert [r.status for r in upkeep_runs(fresh, "backup")] == ["failed"]
    assert sorted(p.name for p in folder.iterdir()) == []


def test_missing_pg_dump_is_not_configured(fresh, backup_env, monkeypatch, tmp_path):
    monkeypatch.setenv("PG_BIN_DIR", str(tmp_path / "empty"))
    with pytest.raises(backup.BackupNotConfigured, match="pg_dump"):
        backup.create()


# --- the CLI ---------------------------------------------------------------------------

def run_cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workers", "backup", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_create_verify_list(fresh, upkeep_db, backup_env):
    add_rows(fresh, users=2, posts_each=2)
    env = {**os.environ, "DATABASE_URL": upkeep_db, "BROKER_URL": os.environ["BROKER_URL"],
           "BACKUP_ROOT": os.environ["BACKUP_ROOT"], "BACKUP_KEY": str(backup_env)}
    secret = str(backup_env)
    folder = Path(os.environ["BACKUP_ROOT"])
    before = set(scratch_databases(fresh))

    created = run_cli(env, "create")
    assert created.returncode == 0, created.stderr
    [dump] = folder.glob(f"*{backup.SUFFIX}")
    assert dump.name in created.stdout
    assert "verified by a restore" in created.stdout

    verified = run_cli(env, "verify")
    assert verified.returncode == 0, verified.stderr
    assert dump.name in verified.stdout and "restored into a scratch database" in verified.stdout

    listed = run_cli(env, "list")
    assert listed.returncode == 0, listed.stderr
    assert dump.name in listed.stdout

    # A tampered manifest: exit 1 with the error code, still no key.
    recorded = json.loads(manifest_of(dump).read_text())
    recorded["tables"]["posts"] = 0
    manifest_of(dump).write_text(json.dumps(recorded))
    failed = run_cli(env, "verify")
    assert failed.returncode == 1
    assert "backup_unverified" in failed.stderr

    for result in (created, verified, listed, failed):
        assert secret not in result.stdout + result.stderr
        assert "AGE-SECRET-KEY" not in result.stdout + result.stderr
    assert set(scratch_databases(fresh)) - before == set()
