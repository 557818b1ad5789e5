"""What Engage holds for each contact (the no-stale-overwrite guard) and the balances it
refused (sync_rejections)."""

from __future__ import annotations

import contextlib
import functools
import operator
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Engine,
    Index,
    Integer,
    String,
    Table,
    func,
    insert,
    select,
)

from worker.store.engine import metadata, utcnow

# What Engage was last sent for each contact, by any flow: the no-stale-overwrite guard.
contact_balances = Table(
    "contact_balances",
    metadata,
    Column("contact_id", String(36), primary_key=True),
    Column("sent_cents", BigInteger),
    Column("sent_mutated_us", BigInteger),  # Treazure's mutatedAt, µs since the epoch
    # The last sync run that found this contact's balance moved: pushed, refused, or the
    # same balance at a newer time (the history refresh pages through them).
    Column("seen_run_id", Integer),
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


class ContactState(NamedTuple):
    """What Engage was last sent for a contact, and the last sync run that moved it.

    Shaped like a row of contact_balances, so rows pass to and from the driver as they are.
    """

    contact_id: str
    sent_cents: int | None
    sent_mutated_us: int | None
    seen_run_id: int | None


# The page caches of a sync run's own connections (SQLite), in KiB. The pooled connections
# (16 MiB each) took turns with a run's reads and writes: over a re-run with nothing written
# each filled its cache (about 35 MB more at a million contacts), and during a first sync
# the writes spread 16-19 MB over them, each cache made stale by the others' commits.
# Reads of random keys gain little from a larger cache; the writer keeps its own warm.
READER_CACHE_KIB = 2048
WRITER_CACHE_KIB = 8192

# Builds a ContactState from a row in C (the named tuple's own _make is a Python call).
_state = functools.partial(tuple.__new__, ContactState)
_contact_of = operator.itemgetter(0)


def _json_rows(rows: Sequence[Sequence[Any]]) -> str:
    return orjson.dumps(list(map(tuple, rows))).decode()


class ContactQueries:
    """The queries on contact_balances and sync_rejections; part of
    `worker.store.database.Store`."""

    engine: Engine
    single_connection: bool
    # The driver's own placeholder: `?` for sqlite3, `%s` for psycopg.
    _mark: str

    def open_connection(self, cache_kib: int) -> Connection | None:
        """A connection of a sync run's own (pass it as `conn`) with a page cache of
        `cache_kib` (SQLite); None for a store on one shared connection. Close it with
        `close_connection`, which drops it: its cache setting must not go back to the pool."""
        if self.single_connection:
            return None
        conn = self.engine.connect()
        if self.engine.dialect.name == "sqlite":
            conn.exec_driver_sql(f"PRAGMA cache_size=-{cache_kib}")
        conn.rollback()
        return conn

    def close_connection(self, conn: Connection | None) -> None:
        if conn is not None:
            conn.invalidate()
            conn.close()

    @contextlib.contextmanager
    def _writing(self, conn: Connection | None) -> Iterator[Connection]:
        """One transaction on `conn`, or on a pooled connection."""
        if conn is None:
            with self.engine.begin() as pooled:
                yield pooled
            return
        with conn.begin():
            yield conn

    @contextlib.contextmanager
    def _reading(self, conn: Connection | None) -> Iterator[Connection]:
        """`conn`, its transaction ended after use (no snapshot held between batches), or a
        pooled connection."""
        if conn is None:
            with self.engine.connect() as pooled:
                yield pooled
            return
        try:
            yield conn
        finally:
            conn.rollback()

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
            # The driver's own cursor: plain tuples, without a Row object per contact.
            cursor = conn.exec_driver_sql(query, tuple(contact_ids)).cursor
            rows = cursor.fetchall()
        return dict(zip(map(_contact_of, rows), map(_state, rows), strict=True))

    def changed_contact_states(
        self, rows: Sequence[Sequence[Any]], run_id: int, conn: Connection | None = None
    ) -> list[ContactState]:
        """What Engage was last sent for the contacts of (contact, cents, mutated µs) rows,
        leaving out each contact last sent exactly that balance at that time and not yet
        marked by `run_id`: the rows a sync run reads unchanged, which it only counts.

        A contact never sent comes back as (contact, None, None, None); so
        `len(rows) - len(result)` rows are unchanged. The contacts must be distinct.
        """
        if not rows:
            return []
        # The rows go in as one JSON parameter and the compare runs in the database, in C
        # and (sqlite3, psycopg) without the GIL: at a million rows a re-run with nothing
        # changed otherwise spent most of its time building a state per unchanged contact.
        return list(map(_state, self._compare(_CHANGED_STATES, rows, run_id, conn)))

    def rows_not_as_sent(
        self, rows: Sequence[Sequence[Any]], run_id: int, conn: Connection | None = None
    ) -> list[int]:
        """The positions, in order, of the (contact, cents, mutated µs) rows that are not
        exactly what Engage was last sent for their contact, or whose contact `run_id`
        already marked: every row but those a sync run may count unchanged unseen.
        Contacts may repeat."""
        if not rows:
            return []
        return self._compare(_NOT_AS_SENT, rows, run_id, conn)

    def _compare(self, queries: dict[bool, str], rows: Sequence[Sequence[Any]], run_id: int,
                 conn: Connection | None) -> list[Any]:
        """A compare query's result: one JSON array (text from SQLite, parsed by psycopg;
        PostgreSQL's is NULL when empty)."""
        query = queries[self.engine.dialect.name == "sqlite"]
        with self._reading(conn) as reader:
            found = reader.exec_driver_sql(query, (_json_rows(rows), run_id)).scalar()
        result: list[Any] = orjson.loads(found) if isinstance(found, str) else found or []
        return result

    def save_contact_states(
        self,
        states: Iterable[tuple[str, int | None, int | None, int | None] | ContactState],
        rejections: Iterable[tuple[int, str, int | None, str | None, str]] = (),
        conn: Connection | None = None,
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
        with self._writing(conn) as writer:
            _upsert_contact_states(writer, rows)
            if rejection_rows:
                writer.execute(insert(sync_rejections), rejection_rows)

    def contacts_seen_in_run(self, run_id: int, after: str = "", limit: int = 1000) -> list[str]:
        """Contacts whose balance moved in a sync run (pushed, refused, or the same balance
        at a newer time), in key order after `after` (keyset pages). A contact the run read
        exactly as Engage was last sent is not among them: nothing happened to it since."""
        t = contact_balances.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.contact_id).where(t.seen_run_id == run_id, t.contact_id > after)
                .order_by(t.contact_id).limit(limit)
            ).all()
        return [row[0] for row in rows]

    def sample_contact_ids(self, count: int) -> list[str]:
        """Up to `count` contacts Engage was sent a balance for, picked at random."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(contact_balances.c.contact_id)
                .where(contact_balances.c.sent_mutated_us.is_not(None))
                .order_by(func.random()).limit(count)
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


# The compare of changed_contact_states and rows_not_as_sent: a row is left out when it
# matches what was sent, the same balance at the same time, and its seen run is not this
# run. Rows go in as one JSON array of [contact, cents, µs].
_COMPARE_FROM = {
    True: (  # SQLite: json_each (its key is the row's index)
        "FROM json_each(?) AS j LEFT JOIN contact_balances AS c "
        "ON c.contact_id = json_extract(j.value, '$[0]') "
        "WHERE c.contact_id IS NULL OR c.sent_cents IS NOT json_extract(j.value, '$[1]') "
        "OR c.sent_mutated_us IS NOT json_extract(j.value, '$[2]') OR c.seen_run_id IS ?"
    ),
    False: (  # PostgreSQL: jsonb_array_elements, numbered from 1
        "FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS j(v, n) "
        "LEFT JOIN contact_balances AS c ON c.contact_id = j.v->>0 "
        "WHERE c.contact_id IS NULL OR c.sent_cents IS DISTINCT FROM (j.v->>1)::bigint "
        "OR c.sent_mutated_us IS DISTINCT FROM (j.v->>2)::bigint "
        "OR c.seen_run_id IS NOT DISTINCT FROM %s"
    ),
}
# sqlite3 hands the GIL back and takes it again for every result row it steps to, and a
# thread waits up to the switch interval (5 ms) for it while the event loop parses pages:
# a first sync's compare returned a row per contact that way, and spent most of its time
# waiting. So each query's result is one JSON array, a single row (on PostgreSQL too).
_CHANGED_STATES = {
    True: "SELECT json_group_array(json_array(json_extract(j.value, '$[0]'), c.sent_cents, "
          "c.sent_mutated_us, c.seen_run_id)) " + _COMPARE_FROM[True],
    False: "SELECT json_agg(json_build_array(j.v->>0, c.sent_cents, c.sent_mutated_us, "
           "c.seen_run_id)) " + _COMPARE_FROM[False],
}
_NOT_AS_SENT = {
    True: "SELECT json_group_array(k) FROM (SELECT j.key AS k " + _COMPARE_FROM[True]
          + " ORDER BY j.key)",
    False: "SELECT json_agg(j.n - 1 ORDER BY j.n) " + _COMPARE_FROM[False],
}


def _upsert_contact_states(conn: Connection, rows: Sequence[Sequence[Any]]) -> None:
    """Upsert (contact, sent cents, sent mutated µs, seen run) rows.

    Never moves a contact back in time: a row older than what another flow recorded
    meanwhile (a point transaction's balance, say) leaves the stored one as it is.
    A NULL seen run keeps the stored one.
    """
    if not rows:
        return
    if conn.dialect.name == "sqlite":
        # One statement over a JSON array, not executemany: sqlite3 takes the GIL back for
        # every row of an executemany (see _COMPARE_FROM).
        conn.exec_driver_sql(
            _UPSERT_INTO + "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), "
            "json_extract(value, '$[2]'), json_extract(value, '$[3]') FROM json_each(?) "
            "WHERE true " + _ON_CONFLICT, (_json_rows(rows),))
        return
    conn.exec_driver_sql(_UPSERT_INTO + "VALUES (%s, %s, %s, %s) " + _ON_CONFLICT, rows)


_UPSERT_INTO = (
    "INSERT INTO contact_balances (contact_id, sent_cents, sent_mutated_us, seen_run_id) ")
_ON_CONFLICT = (
    "ON CONFLICT (contact_id) DO UPDATE SET "
    "sent_cents = excluded.sent_cents, "
    "sent_mutated_us = excluded.sent_mutated_us, "
    "seen_run_id = COALESCE(excluded.seen_run_id, contact_balances.seen_run_id) "
    "WHERE contact_balances.sent_mutated_us IS NULL "
    "OR excluded.sent_mutated_us >= contact_balances.sent_mutated_us")


def save_sent_balances(conn: Connection, sent: Iterable[tuple[str, int, int]]) -> None:
    """Record balances Engage was sent outside a sync run (contact, cents, mutated µs)."""
    _upsert_contact_states(
        conn, sorted((cid, cents, us, None) for cid, cents, us in sent))
