"""The database connection: the engine (SQLite by default, PostgreSQL through DATABASE_URL),
the one MetaData every table joins, and the small helpers every store module shares."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, MetaData, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.pool import StaticPool

metadata = MetaData()


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes even for timezone=True columns.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def insert_for(engine: Engine, table: Table) -> sqlite.Insert | postgresql.Insert:
    """An INSERT for this engine's dialect, so it offers ON CONFLICT (`on_conflict_do_*`)."""
    if engine.dialect.name == "sqlite":
        return sqlite.insert(table)
    return postgresql.insert(table)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        memory = url in ("sqlite://", "sqlite:///:memory:")
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            poolclass=StaticPool if memory else None,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            if not memory:
                # WAL lets the CLI read while a sync writes; NORMAL is safe with WAL.
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            # Upserts of random GUID keys touch pages all over the index: 16 MiB of cache
            # (default 2 MiB) and a larger WAL between checkpoints (default 1,000 pages)
            # mean a hot page is written far fewer times.
            cursor.execute("PRAGMA cache_size=-16384")
            cursor.execute("PRAGMA wal_autocheckpoint=10000")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
