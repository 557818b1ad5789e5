"""Alembic environment: runs on the connection `worker.store.upgrade_schema` hands in."""

from alembic import context
from sqlalchemy import create_engine

from worker.store import metadata

config = context.config


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is None:  # plain `alembic upgrade head` from a shell
        from worker.settings import get_core_settings

        engine = create_engine(get_core_settings().DATABASE_URL)
        with engine.begin() as connection:
            _migrate(connection)
        return
    _migrate(connection)


def _migrate(connection) -> None:  # type: ignore[no-untyped-def]
    # render_as_batch lets SQLite apply ALTERs by copying tables.
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run()
