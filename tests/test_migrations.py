"""The Alembic chain goes down to nothing and back up, on a database of its own."""
from sqlalchemy import create_engine, inspect, text

from db.migrate import downgrade, upgrade
from db.models import Base
from tests.conftest import scratch_database


def test_migrations_down_and_up_match_the_models(database_url):
    with scratch_database(database_url, "jobs_migr") as scratch:
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


def test_models_and_migrations_agree(engine):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from db.partitions import include_object

    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"include_object": include_object})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []
