"""The outbox: record first, then call the outside system exactly once, settle, sweep, replay.

Any flow whose request must reach another system once, whatever fails (a point booking in
Treazure; next a gift-card order in Toggle, an event delivered to each destination), keeps
one row per request in a table of its own built with `outbox_columns`, and works on it
through an `Outbox` over that table:

    orders = Table("giftcard_orders", metadata,
                   *outbox_columns("giftcard_orders", key="order_id"),
                   Column("card_id", String(64)), ...)
    outbox = Outbox(engine, orders, open_states=("received", "issued"))

1. **Record** before acknowledging anything: `insert_once(values)` creates the row, or
   returns the existing one untouched when the key is known (a redelivered webhook).
2. **Claim**: `claim(key, lease_seconds)` takes the row's lease with a conditional UPDATE;
   it returns None when the row is final or someone else holds an unexpired lease. The
   holder passes the claimed `lease_until` to every later move; `renew` extends it.
3. **Mark uncertain** before the request leaves: `mark_uncertain(key, lease)` commits
   `uncertain = true` and counts the attempt, so a worker that dies mid-call leaves a row
   known to need a check of the remote side (its history, its order list) before any
   new send. `move(key, lease, uncertain=False, …)` clears it once the outcome is known.
4. **Call** the outside system, once.
5. **Settle**: `move(key, lease, state=…, …)`, `fail(key, reason, lease)`, or
   `release(key, retry_in, lease)` to try again later. A move with a lease that is no
   longer the row's raises `LeaseLost`: stop, another worker may hold the row.
6. **Sweep** (a scheduled task): `lost(state, stale_seconds)` finds rows whose worker is
   presumed gone (lease run out, retry due, or untouched too long); `due(state)` and
   `next_due(state)` the rows waiting for a later step; claim them as in 2.
7. **Replay**: an operator lists `failed` rows (`listing`, `counts_by_state`) and
   `reopen(key, state)` puts one back in an open state with a fresh count of attempts.

Guarantees: a request is in the database before it is acknowledged; at most one worker
holds a row at a time, whether or not Redis (broker, locks) survives, because the lease is
in the row; a move by a holder whose lease ran out never lands; a send whose outcome is
unknown is always marked before it leaves; what cannot succeed ends `failed` with its
reason, visible and replayable. The exactly-once call itself still needs the flow's check
of the remote side for an `uncertain` row: the outbox says when that check is due.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy import (
    Boolean,
    Column,
    ColumnElement,
    Connection,
    DateTime,
    Engine,
    Index,
    Integer,
    String,
    Table,
    Text,
    and_,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.engine import RowMapping
from sqlalchemy.schema import SchemaItem

from worker.store.engine import as_utc, insert_for, utcnow

RowT = TypeVar("RowT")

FAILED = "failed"
# Reasons come from remote answers and exceptions: kept readable, never unbounded.
REASON_LIMIT = 2000


class LeaseLost(Exception):
    """The row's lease ran out and someone else may hold it: stop working on it."""


def outbox_columns(table_name: str, key: str = "key", key_length: int = 64) -> list[SchemaItem]:
    """The columns (and the sweep's index) every outbox table has; a table adds its own.

    `key` is the request's own identity (a reference, an order id, event + destination):
    the primary key, so recording the same request twice keeps one row.
    """
    return [
        Column(key, String(key_length), primary_key=True),
        Column("state", String(16), nullable=False),
        Column("reason", Text),
        Column("attempts", Integer, nullable=False, default=0),
        # The last request may have reached the remote side: check there before resending.
        Column("uncertain", Boolean, nullable=False, default=False),
        Column("lease_until", DateTime(timezone=True)),  # NULL: nobody holds the row
        Column("next_attempt_at", DateTime(timezone=True)),  # NULL: no retry planned
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
        Index(f"ix_{table_name}_state", "state", "next_attempt_at"),
    ]


def utc_row(mapping: Mapping[str, Any] | RowMapping) -> dict[str, Any]:
    """A row as a dict, its times in UTC whatever the driver returned."""
    return {name: as_utc(value) if isinstance(value, datetime) else value
            for name, value in mapping.items()}


class Outbox(Generic[RowT]):
    """The outbox operations on one table built with `outbox_columns`.

    `open_states` are the states a worker may still claim a row in; every other state is
    final. `make_row` turns a fetched row (a mapping, times in UTC) into the caller's type.
    `noun` names a row in LeaseLost's message.
    """

    def __init__(
        self,
        engine: Engine,
        table: Table,
        *,
        open_states: tuple[str, ...],
        make_row: Callable[[dict[str, Any]], RowT],
        noun: str = "row",
    ) -> None:
        self.engine = engine
        self.table = table
        self.open_states = open_states
        self.make_row = make_row
        self.noun = noun
        (self.key,) = table.primary_key.columns

    # -- recording ------------------------------------------------------------------------

    def insert_once(self, values: dict[str, Any]) -> tuple[RowT, bool]:
        """The row for `values`' key, and whether this call created it: one statement for a
        new row, and no error raised and rolled back for an existing one (returned as is)."""
        insert_new = insert_for(self.engine, self.table).values(**values).on_conflict_do_nothing()
        with self.engine.begin() as conn:
            created = conn.execute(insert_new.returning(*self.table.c)).mappings().first()
        if created is not None:
            return self.make_row(utc_row(created)), True
        row = self.get(values[self.key.name])
        assert row is not None
        return row, False

    def get(self, key: str) -> RowT | None:
        found = self.rows(self.key == key, limit=1)
        return found[0] if found else None

    def rows(
        self, *conditions: ColumnElement[bool], order_by: Any = None, limit: int | None = None
    ) -> list[RowT]:
        """Rows matching every condition: the building block of a table's own queries."""
        query = select(self.table).where(*conditions)
        if order_by is not None:
            query = query.order_by(order_by)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            found = conn.execute(query).mappings().all()
        return [self.make_row(utc_row(r)) for r in found]

    # -- the lease and lease-checked moves ------------------------------------------------

    def claim(self, key: str, lease_seconds: float) -> RowT | None:
        """Take the row's lease if it is open and nobody holds it; None otherwise."""
        now = utcnow()
        t = self.table.c
        with self.engine.begin() as conn:
            taken = conn.execute(
                update(self.table)
                .where(self.key == key, t.state.in_(self.open_states),
                       or_(t.lease_until.is_(None), t.lease_until < now))
                # The holder decides when the row is next due; should it die, the expired
                # lease alone makes the row due (see `lost`).
                .values(lease_until=now + timedelta(seconds=lease_seconds), next_attempt_at=None)
                .returning(*self.table.c)
            ).mappings().first()
        return self.make_row(utc_row(taken)) if taken is not None else None

    def renew(self, key: str, lease: datetime, lease_seconds: float) -> datetime:
        """Extend the holder's lease to `lease_seconds` from now; returns the new
        lease_until (every later move must give it), or LeaseLost."""
        until = utcnow() + timedelta(seconds=lease_seconds)
        self.move(key, lease, lease_until=until)
        return until

    def renew_sending(self, key: str, lease: datetime, lease_seconds: float) -> datetime:
        """`renew` and `mark_uncertain` in one statement, just before a request leaves."""
        until = utcnow() + timedelta(seconds=lease_seconds)
        self.mark_uncertain(key, lease, lease_until=until)
        return until

    def release(self, key: str, retry_in: float | None = None,
                lease: datetime | None = None) -> None:
        """Give the lease back; `retry_in` seconds is when the sweep may try the row again."""
        retry_at = utcnow() + timedelta(seconds=retry_in) if retry_in is not None else None
        self.move(key, lease, lease_until=None, next_attempt_at=retry_at)

    def mark_uncertain(self, key: str, lease: datetime | None = None, **values: Any) -> None:
        """Committed before the request leaves: if we die, the row is known to be uncertain."""
        self.move(key, lease, attempts=self.table.c.attempts + 1, uncertain=True, **values)

    def fail(self, key: str, reason: str, lease: datetime | None = None) -> None:
        self.move(key, lease, state=FAILED, uncertain=False, reason=reason[:REASON_LIMIT],
                  lease_until=None, next_attempt_at=None)

    def move(self, key: str, lease: datetime | None, **values: Any) -> None:
        """Set `values` on the row. With the holder's `lease` (its lease_until as claimed or
        renewed) only while that lease is still the row's, else LeaseLost; without one,
        unconditionally (a move that needs no holder)."""
        condition = self.key == key
        if lease is not None:
            condition = and_(condition, self.table.c.lease_until == lease)
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(self.table).where(condition).values(updated_at=utcnow(), **values)
            ).rowcount
        if lease is not None and changed != 1:
            raise LeaseLost(f"{self.noun} {key}: lease ran out; another worker may hold it")

    def move_many(self, conn: Connection, keys: Iterable[str], **values: Any) -> None:
        """Set `values` on many rows at once, in the caller's transaction (to settle them
        together with what the settling records elsewhere); no lease is checked."""
        keys = list(keys)
        if keys:
            conn.execute(update(self.table).where(self.key.in_(keys))
                         .values(**{"updated_at": utcnow(), **values}))

    def defer(self, keys: Iterable[str], seconds: float, reason: str | None = None) -> None:
        """Plan the next attempt at these rows `seconds` from now."""
        keys = list(keys)
        if not keys:
            return
        now = utcnow()
        values: dict[str, Any] = {"next_attempt_at": now + timedelta(seconds=seconds),
                                  "updated_at": now}
        if reason is not None:
            values["reason"] = reason[:REASON_LIMIT]
        with self.engine.begin() as conn:
            self.move_many(conn, keys, **values)

    # -- the sweep -------------------------------------------------------------------------

    def due(self, state: str, limit: int, order_by: Any = None) -> list[RowT]:
        """Rows in `state` whose next attempt is due (or never planned), oldest first."""
        t = self.table.c
        return self.rows(
            t.state == state, or_(t.next_attempt_at.is_(None), t.next_attempt_at <= utcnow()),
            order_by=t.created_at if order_by is None else order_by, limit=limit)

    def next_due(self, state: str) -> datetime | None:
        """When the earliest row in `state` may be tried again (None: no row in it)."""
        t = self.table.c
        with self.engine.connect() as conn:
            found = conn.execute(
                select(t.next_attempt_at).where(t.state == state)
                .order_by(t.next_attempt_at.is_not(None), t.next_attempt_at).limit(1)
            ).all()
        if not found:
            return None
        return as_utc(found[0][0]) or utcnow()

    def lost(self, state: str, stale_seconds: float, limit: int = 1000) -> list[RowT]:
        """Rows in `state` whose worker is presumed lost: unleased (or lease run out), and
        either due for a retry, or with no retry planned and either a lease that ran out
        (its holder is gone: a live one renews it) or untouched for `stale_seconds`."""
        now = utcnow()
        t = self.table.c
        return self.rows(
            t.state == state,
            or_(t.lease_until.is_(None), t.lease_until < now),
            or_(t.next_attempt_at <= now,
                and_(t.next_attempt_at.is_(None),
                     or_(t.lease_until < now,
                         t.updated_at < now - timedelta(seconds=stale_seconds)))),
            order_by=t.created_at, limit=limit)

    # -- operators ------------------------------------------------------------------------

    def reopen(self, key: str, state: str) -> RowT | None:
        """Replay a failed row: back to the open `state`, its attempts counted afresh.
        A row that is not failed stays as it is; either way the row is returned."""
        t = self.table.c
        with self.engine.begin() as conn:
            conn.execute(
                update(self.table).where(self.key == key, t.state == FAILED)
                .values(state=state, reason=None, next_attempt_at=None, lease_until=None,
                        attempts=0, updated_at=utcnow())
            )
        return self.get(key)

    def listing(self, state: str | None = None, limit: int = 50) -> list[RowT]:
        """The most recently changed rows, of one state or all."""
        t = self.table.c
        conditions = [t.state == state] if state is not None else []
        return self.rows(*conditions, order_by=t.updated_at.desc(), limit=limit)

    def counts_by_state(self) -> dict[str, int]:
        """Rows in each state present, counting the whole table (an operator's query)."""
        t = self.table.c
        with self.engine.connect() as conn:
            found = conn.execute(select(t.state, func.count()).group_by(t.state)).all()
        return {state: int(n) for state, n in found}

    def open_counts(self) -> dict[str, int]:
        """Rows in each open state, every one named, counted through the state index
        (cheap while few rows are open, as in a healthy outbox)."""
        state = self.table.c.state
        with self.engine.connect() as conn:
            counts = conn.execute(
                select(*(func.count().filter(state == name) for name in self.open_states))
                .where(state.in_(self.open_states))
            ).one()
        return {name: int(n) for name, n in zip(self.open_states, counts, strict=True)}

    def oldest_open_created_at(self) -> datetime | None:
        """When the oldest row still in an open state was recorded (None: no open row)."""
        t = self.table.c
        with self.engine.connect() as conn:
            value = conn.execute(
                select(func.min(t.created_at)).where(t.state.in_(self.open_states))
            ).scalar()
        return as_utc(value)
