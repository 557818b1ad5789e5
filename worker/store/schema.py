"""The schema's upgrades: the Alembic migrations in worker/store/migrations, applied under
a lock so any number of processes may start together on a fresh database."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, text


def migrations_config() -> Any:
    """Alembic's configuration for the migrations shipped in worker/store/migrations."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    return config


# Any fixed 64-bit number, the same in every process: the key of the PostgreSQL advisory
# lock that serialises migrations ("pointsyn" in ASCII).
MIGRATION_LOCK_KEY = 0x706F696E7473796E


@contextlib.contextmanager
def migration_connection(engine: Engine) -> Iterator[Connection]:
    """A transaction that holds the database's migration lock until it ends.

    Worker, history worker, beat and web all upgrade at start; on a fresh database they
    would otherwise create the same tables at once, and all but one would fail. Alembic
    reads the current revision inside this transaction, after the lock is taken, so a
    process that waited sees what the first one did and has nothing left to do.
    """
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Transaction-level: released by the commit or the rollback, never leaked.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                               {"key": MIGRATION_LOCK_KEY})
        elif connection.dialect.name == "sqlite":
            # The file's write lock, taken now rather than at the first write (sqlite3 runs
            # DDL outside any transaction otherwise); the others wait up to busy_timeout.
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        yield connection


def upgrade_schema(engine: Engine) -> None:
    """Bring the schema to the newest migration (idempotent; safe on every start, and
    from any number of processes starting together)."""
    from alembic import command

    config = migrations_config()
    with migration_connection(engine) as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
