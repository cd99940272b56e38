"""The Alembic chain goes down to nothing and back up, on a database of its own."""
import uuid

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from db.migrate import downgrade, upgrade
from db.models import Base


def test_migrations_down_and_up_match_the_models(database_url):
    url = make_url(database_url)
    name = f"jobs_migr_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    scratch = url.set(database=name).render_as_string(hide_password=False)
    engine = create_engine(scratch)
    try:
        upgrade(scratch)
        tables_up = set(inspect(engine).get_table_names())
        assert set(Base.metadata.tables) <= tables_up
        downgrade(scratch, "base")
        engine.dispose()
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        with engine.connect() as connection:
            assert connection.scalar(text("SELECT count(*) FROM pg_type WHERE typname = 'post_type'")) == 0
        upgrade(scratch)
        engine.dispose()
        assert set(inspect(engine).get_table_names()) == tables_up
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_models_and_migrations_agree(engine):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from db.partitions import include_object

    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"include_object": include_object})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []
