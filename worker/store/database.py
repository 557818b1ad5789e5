"""The worker's own store: tables and the queries the flows need (SQLAlchemy 2 Core).

SQLite by default, PostgreSQL through DATABASE_URL. The schema comes from the Alembic
migrations in worker/migrations (see `upgrade_schema`); the tables here describe it.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.pool import StaticPool

metadata = MetaData()

sync_runs = Table(
    "sync_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("status", String(16), nullable=False),  # running|succeeded|failed|skipped|abandoned
    Column("explicit_window", Boolean, nullable=False, default=False),
    Column("window_from", DateTime(timezone=True)),
    Column("window_to", DateTime(timezone=True)),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("duration_seconds", Float),
    Column("fetched", BigInteger, nullable=False, default=0),
    Column("unique_contacts", BigInteger, nullable=False, default=0),
    Column("unchanged", BigInteger, nullable=False, default=0),
    Column("stale", BigInteger, nullable=False, default=0),
    Column("pushed", BigInteger, nullable=False, default=0),
    Column("rejected", BigInteger, nullable=False, default=0),
    Column("error", Text),
    Column("task_id", String(64)),
    # sync (scheduled or manual), migrate (the go-live copy) or heal (reconcile --heal)
    Column("kind", String(16), nullable=False, default="sync", server_default="sync"),
    Index("ix_sync_runs_status", "status", "started_at"),
    Index("ix_sync_runs_kind", "kind", "id"),
    Index("ix_sync_runs_task", "task_id"),
)

# What Engage was last sent for each contact, by any flow: the no-stale-overwrite guard.
contact_balances = Table(
    "contact_balances",
    metadata,
    Column("contact_id", String(36), primary_key=True),
    Column("sent_cents", BigInteger),
    Column("sent_mutated_us", BigInteger),  # Treazure's mutatedAt, µs since the epoch
    Column("seen_run_id", Integer),  # last sync run that read this contact
    sqlite_with_rowid=False,
)

sync_rejections = Table(
    "sync_rejections",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, nullable=False, index=True),
    Column("contact_id", String(64), nullable=False),
    Column("cents", BigInteger),
    Column("mutated_at", String(40)),
    Column("reason", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_sync_rejections_reason", "reason", "created_at"),
)

RUN_COUNTS = ("fetched", "unique_contacts", "unchanged", "stale", "pushed", "rejected")


def utcnow() -> datetime:
    return datetime.now(UTC)


def _as_utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes even for timezone=True columns.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class ContactState(NamedTuple):
    """What Engage was last sent for a contact, and the last sync run that read it.

    Shaped like a row of contact_balances, so rows pass to and from the driver as they are.
    """

    contact_id: str
    sent_cents: int | None
    sent_mutated_us: int | None
    seen_run_id: int | None


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


def migrations_config() -> Any:
    """Alembic's configuration for the migrations shipped in worker/migrations."""
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


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # SQLite in memory lives in one connection that threads must not use at once.
        self.single_connection = isinstance(engine.pool, StaticPool)
        # The driver's own placeholder: `?` for sqlite3, `%s` for psycopg.
        self._mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"

    # -- sync runs --------------------------------------------------------------------

    def abandon_running_runs(self) -> int:
        """Runs left 'running' by a holder that died; called while holding the run lock.

        Every kind of run (sync, migrate, heal) creates its row only while holding the
        run lock, so a row still `running` when the lock is taken has no live holder.
        """
        with self.engine.begin() as conn:
            result = conn.execute(
                update(sync_runs)
                .where(sync_runs.c.status == "running")
                .values(status="abandoned", finished_at=utcnow(),
                        error="the worker running it stopped before it finished")
            )
            return result.rowcount or 0

    def has_running_run(self, task_id: str) -> bool:
        """Whether a run of this Celery task is recorded as still running."""
        with self.engine.connect() as conn:
            found = conn.execute(
                select(sync_runs.c.id).where(
                    sync_runs.c.task_id == task_id, sync_runs.c.status == "running"
                ).limit(1)
            ).first()
        return found is not None

    def watermark(self) -> datetime | None:
        """Start time of the newest successful scheduled-window run."""
        with self.engine.connect() as conn:
            value = conn.execute(
                select(func.max(sync_runs.c.started_at)).where(
                    sync_runs.c.status == "succeeded", sync_runs.c.explicit_window.is_(False)
                )
            ).scalar()
        return _as_utc(value)

    def start_run(
        self,
        *,
        started_at: datetime,
        window_from: datetime | None,
        window_to: datetime | None,
        explicit_window: bool,
        task_id: str | None,
        status: str = "running",
        kind: str = "sync",
    ) -> int:
        with self.engine.begin() as conn:
            result = conn.execute(
                insert(sync_runs).values(
                    status=status, started_at=started_at, window_from=window_from,
                    window_to=window_to, explicit_window=explicit_window, task_id=task_id,
                    kind=kind, **dict.fromkeys(RUN_COUNTS, 0),
                )
            )
            return int(result.inserted_primary_key[0])

    def update_run(self, run_id: int, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(sync_runs).where(sync_runs.c.id == run_id).values(**values))

    def get_run(self, run_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(sync_runs).where(sync_runs.c.id == run_id)).mappings()
            found = row.first()
        return _run_dict(found) if found else None

    def recent_runs(self, limit: int = 10, kind: str | None = None) -> list[dict[str, Any]]:
        query = select(sync_runs).order_by(sync_runs.c.id.desc()).limit(limit)
        if kind is not None:
            query = query.where(sync_runs.c.kind == kind)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [_run_dict(row) for row in rows]

    def last_success_finished(self, kind: str = "sync") -> datetime | None:
        """When the newest successful run of this kind ended."""
        t = sync_runs.c
        with self.engine.connect() as conn:
            value = conn.execute(
                select(func.max(t.finished_at)).where(t.status == "succeeded", t.kind == kind)
            ).scalar()
        return _as_utc(value)

    def run_for_task(self, task_id: str) -> dict[str, Any] | None:
        """The newest run recorded by this Celery task, if it has started one."""
        with self.engine.connect() as conn:
            found = conn.execute(
                select(sync_runs).where(sync_runs.c.task_id == task_id)
                .order_by(sync_runs.c.id.desc()).limit(1)
            ).mappings().first()
        return _run_dict(found) if found else None

    def sample_contact_ids(self, count: int) -> list[str]:
        """Up to `count` contacts Engage was sent a balance for, picked at random."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(contact_balances.c.contact_id)
                .where(contact_balances.c.sent_mutated_us.is_not(None))
                .order_by(func.random()).limit(count)
            ).all()
        return [row[0] for row in rows]

    # -- what Engage holds ------------------------------------------------------------

    # The two queries below run once per batch of up to 1,000 contacts during a sync, so
    # they go straight to the driver's executemany: SQLAlchemy's per-row parameter
    # processing cost more than the database work at a million rows.

    def contact_states(self, contact_ids: Sequence[str]) -> dict[str, ContactState]:
        if not contact_ids:
            return {}
        marks = ",".join([self._mark] * len(contact_ids))
        query = (
            "SELECT contact_id, sent_cents, sent_mutated_us, seen_run_id "
            f"FROM contact_balances WHERE contact_id IN ({marks})"
        )
        with self.engine.connect() as conn:
            rows = conn.exec_driver_sql(query, tuple(contact_ids)).all()
        return {row[0]: ContactState._make(row) for row in rows}

    def save_contact_states(
        self,
        states: Iterable[tuple[str, int | None, int | None, int | None] | ContactState],
        rejections: Iterable[tuple[int, str, int | None, str | None, str]] = (),
    ) -> None:
        """Upsert (contact, sent cents, sent mutated µs, seen run) rows, and rejected rows
        (run, contact, cents, mutatedAt, reason), in one transaction."""
        # In key order, a transaction meets each index page once, not once per row.
        rows = sorted(states, key=operator.itemgetter(0))
        rejection_rows = [
            {"run_id": run_id, "contact_id": cid, "cents": cents, "mutated_at": at,
             "reason": reason[:200], "created_at": utcnow()}
            for run_id, cid, cents, at, reason in rejections
        ]
        with self.engine.begin() as conn:
            _upsert_contact_states(conn, rows)
            if rejection_rows:
                conn.execute(insert(sync_rejections), rejection_rows)

    def contacts_seen_in_run(self, run_id: int, after: str = "", limit: int = 1000) -> list[str]:
        """Contacts a sync run read, in key order after `after` (keyset pages)."""
        t = contact_balances.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.contact_id).where(t.seen_run_id == run_id, t.contact_id > after)
                .order_by(t.contact_id).limit(limit)
            ).all()
        return [row[0] for row in rows]

    def refusals_to_retry(
        self, reason: str, period: timedelta, now: datetime
    ) -> list[tuple[str, int, str]]:
        """Balances (contact, cents, mutatedAt) Engage refused with `reason`, first
        refused less than `period` before `now`.

        A balance refused again by a retry keeps its first refusal's time: retries stop
        `period` after it. Only rows of the last two periods are read: the refusals of a
        balance first refused earlier ended more than a period ago.
        """
        t = sync_rejections.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.contact_id, t.cents, t.mutated_at)
                .where(t.reason == reason, t.cents.is_not(None), t.mutated_at.is_not(None),
                       t.created_at >= now - 2 * period)
                .group_by(t.contact_id, t.cents, t.mutated_at)
                .having(func.min(t.created_at) >= now - period)
            ).all()
        return [(row[0], row[1], row[2]) for row in rows]

    def rejections(self, run_id: int) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(sync_rejections).where(sync_rejections.c.run_id == run_id)
                .order_by(sync_rejections.c.id)
            ).mappings().all()
        return [dict(row) for row in rows]


def _upsert_contact_states(conn: Connection, rows: Sequence[Sequence[Any]]) -> None:
    """Upsert (contact, sent cents, sent mutated µs, seen run) rows.

    Never moves a contact back in time: a row older than what another flow recorded
    meanwhile (a point transaction's balance, say) leaves the stored one as it is.
    A NULL seen run keeps the stored one.
    """
    if not rows:
        return
    m = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    conn.exec_driver_sql(
        "INSERT INTO contact_balances (contact_id, sent_cents, sent_mutated_us, seen_run_id) "
        f"VALUES ({m}, {m}, {m}, {m}) ON CONFLICT (contact_id) DO UPDATE SET "
        "sent_cents = excluded.sent_cents, "
        "sent_mutated_us = excluded.sent_mutated_us, "
        "seen_run_id = COALESCE(excluded.seen_run_id, contact_balances.seen_run_id) "
        "WHERE contact_balances.sent_mutated_us IS NULL "
        "OR excluded.sent_mutated_us >= contact_balances.sent_mutated_us",
        rows,
    )


def save_sent_balances(conn: Connection, sent: Iterable[tuple[str, int, int]]) -> None:
    """Record balances Engage was sent outside a sync run (contact, cents, mutated µs)."""
    _upsert_contact_states(
        conn, sorted((cid, cents, us, None) for cid, cents, us in sent))


def _run_dict(row: Any) -> dict[str, Any]:
    data = dict(row)
    for key in ("window_from", "window_to", "started_at", "finished_at"):
        data[key] = _as_utc(data[key])
    return data
