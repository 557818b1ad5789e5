"""Alembic environment: runs on the connection `worker.store.schema.upgrade_schema` hands in."""

from alembic import context
from sqlalchemy.engine import Connection

from worker.store.engine import make_engine, metadata
from worker.store.schema import migration_connection

config = context.config


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is None:  # plain `alembic upgrade head` from a shell
        from worker.base.settings import get_core_settings

        engine = make_engine(get_core_settings().DATABASE_URL)
        with migration_connection(engine) as connection:
            _migrate(connection)
        engine.dispose()
        return
    _migrate(connection)


def _migrate(connection: Connection) -> None:
    # render_as_batch lets SQLite apply ALTERs by copying tables.
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run()
