"""A database of its own for the upkeep tests: they create, detach and drop
partitions at frozen dates, which must not leak into the shared test database.

``upkeep_db`` (module scope) points DATABASE_URL at a fresh, migrated database
for the module; ``fresh`` (per test) empties it and removes every partition, so
each test starts from the migration's bare partitioned tables.
"""
from __future__ import annotations

import os

import pyrage
import pytest
from sqlalchemy import text

from db import partitions
from db.migrate import upgrade
from db.session import get_engine, reset_engine
from tests.conftest import scratch_database, truncate_all


@pytest.fixture(scope="module")
def upkeep_db(database_url):
    with scratch_database(database_url, "jobs_upkeep") as scratch:
        upgrade(scratch)
        saved = os.environ.get("DATABASE_URL")
        os.environ["DATABASE_URL"] = scratch
        reset_engine()
        try:
            yield scratch
        finally:
            reset_engine()
            if saved is None:
                os.environ.pop("DATABASE_URL", None)
            else:
                os.environ["DATABASE_URL"] = saved


def drop_partitions(engine) -> None:
    parents = [s.table for s in partitions.PARTITIONED_TABLES] + [
        s.archive_table for s in partitions.PARTITIONED_TABLES if s.archive_table]
    with engine.begin() as connection:
        children = connection.execute(text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = ANY(:parents)"), {"parents": parents}).scalars()
        for child in list(children):
            connection.execute(text(f'DROP TABLE IF EXISTS "{child}"'))


@pytest.fixture
def fresh(upkeep_db):
    """An empty upkeep database without partitions; yields its engine."""
    engine = get_engine()
    drop_partitions(engine)
    truncate_all(engine)
    yield engine
    drop_partitions(engine)
    truncate_all(engine)


@pytest.fixture
def backup_env(tmp_path, monkeypatch):
    """BACKUP_ROOT in a temporary folder and a fresh age key; yields the identity."""
    key = pyrage.x25519.Identity.generate()
    monkeypatch.setenv("BACKUP_ROOT", str(tmp_path / "backups"))
    monkeypatch.setenv("BACKUP_KEY", str(key))
    return key
