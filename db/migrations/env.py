from alembic import context
from sqlalchemy import create_engine, pool

from db.locks import key_sql
from db.models import Base
from db.partitions import include_object

MIGRATION_LOCK = "db.migrations"

target_metadata = Base.metadata


def _url() -> str:
    url = context.config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from db.session import database_url

    return database_url()


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True,
                      include_object=include_object)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = context.config.attributes.get("connection")
    if connectable is not None:
        context.configure(connection=connectable, target_metadata=target_metadata, include_object=include_object)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, include_object=include_object)
        with context.begin_transaction():
            # Two processes migrating at once (make run starts several) would race
            # on DDL; the advisory lock makes the second wait and then find nothing to do.
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({key_sql(repr(MIGRATION_LOCK))})")
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
