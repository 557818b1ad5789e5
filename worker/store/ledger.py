"""The point-transaction ledger: one row per reference, and the database is the truth.

States: `received` (recorded, not yet booked) → `booked` (Treazure holds it; the new balance
is known) → `applied` (that balance, or a newer one, is what Engage was sent); or `failed`
with a reason. A worker works on a row only while it holds the row's lease, taken with a
conditional UPDATE, so two workers never book the same row at once even if Redis (broker,
locks) restarts. `uncertain` marks a row whose last booking request may have reached
Treazure: before any new send, Treazure's history is read for its receiptNr.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
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
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from worker.base.point_request import PointRequest
from worker.store.database import Store, _as_utc, metadata, save_sent_balances, utcnow

point_transactions = Table(
    "point_transactions",
    metadata,
    Column("reference", String(64), primary_key=True),
    Column("contact_id", String(64), nullable=False),
    Column("amount_cents", BigInteger),  # NULL only for a request recorded as invalid
    Column("description", Text),
    Column("source", String(16), nullable=False),  # task | webhook | cli
    Column("state", String(16), nullable=False),  # received | booked | applied | failed
    Column("reason", Text),
    Column("attempts", Integer, nullable=False, default=0),
    Column("uncertain", Boolean, nullable=False, default=False),
    Column("balance_cents", BigInteger),  # Treazure's balance right after the booking
    Column("balance_mutated_us", BigInteger),  # when Treazure booked it (its history time)
    Column("first_sent_at", DateTime(timezone=True)),
    Column("lease_until", DateTime(timezone=True)),
    Column("next_attempt_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("booked_at", DateTime(timezone=True)),
    Column("applied_at", DateTime(timezone=True)),
    Index("ix_point_transactions_state", "state", "next_attempt_at"),
)

OPEN_STATES = ("received", "booked")

# How many rows are applied and how many failed, kept by database triggers in the same
# transaction as each move (migration 0006): /metrics reads these instead of counting.
ledger_state_totals = Table(
    "ledger_state_totals",
    metadata,
    Column("state", String(16), primary_key=True),
    Column("count", BigInteger, nullable=False),
)


class LeaseLost(Exception):
    """The row's lease ran out and someone else may hold it: stop working on it."""
_TIMES = ("first_sent_at", "lease_until", "next_attempt_at", "created_at", "updated_at",
          "booked_at", "applied_at")


@dataclass(frozen=True)
class LedgerRow:
    reference: str
    contact_id: str
    amount_cents: int | None
    description: str | None
    source: str
    state: str
    reason: str | None
    attempts: int
    uncertain: bool
    balance_cents: int | None
    balance_mutated_us: int | None
    first_sent_at: datetime | None
    lease_until: datetime | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    booked_at: datetime | None
    applied_at: datetime | None

    @property
    def final(self) -> bool:
        return self.state not in OPEN_STATES

    def same_request(self, request: PointRequest) -> bool:
        return (self.contact_id, self.amount_cents, self.description) == (
            request.contact_id, request.amount_cents, request.description)


def _row(mapping: Any) -> LedgerRow:
    data = dict(mapping)
    for key in _TIMES:
        data[key] = _as_utc(data[key])
    return LedgerRow(**data)


class Ledger:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.engine = store.engine

    # -- recording --------------------------------------------------------------------

    def record(self, request: PointRequest, source: str) -> tuple[LedgerRow, bool]:
        """The row for this reference, and whether this call created it.

        An existing row is returned as it is: the same reference books nothing new.
        """
        now = utcnow()
        values = {
            "reference": request.reference, "contact_id": request.contact_id,
            "amount_cents": request.amount_cents, "description": request.description,
            "source": source, "state": "received", "attempts": 0, "uncertain": False,
            "created_at": now, "updated_at": now,
        }
        return self._insert_once(values)

    def record_invalid(
        self, reference: str, contact_id: Any, description: Any, source: str, reason: str
    ) -> tuple[LedgerRow, bool]:
        """Keep a refused webhook event as `failed`, so an operator sees it (nothing is booked)."""
        now = utcnow()
        values = {
            "reference": reference, "contact_id": str(contact_id)[:64],
            "amount_cents": None,
            "description": description if isinstance(description, str) else None,
            "source": source, "state": "failed", "reason": reason, "attempts": 0,
            "uncertain": False, "created_at": now, "updated_at": now,
        }
        return self._insert_once(values)

    def _insert_once(self, values: dict[str, Any]) -> tuple[LedgerRow, bool]:
        """Insert unless the reference exists: one statement for a new row (the webhook's
        usual case), and no error raised and rolled back for an existing one."""
        dialect = self.engine.dialect.name
        insert_new = (sqlite_insert if dialect == "sqlite" else postgresql_insert)(
            point_transactions).values(**values).on_conflict_do_nothing()
        with self.engine.begin() as conn:
            created = conn.execute(insert_new.returning(*point_transactions.c)).mappings().first()
        if created is not None:
            return _row(created), True
        row = self.get(values["reference"])
        assert row is not None
        return row, False

    def get(self, reference: str) -> LedgerRow | None:
        with self.engine.connect() as conn:
            found = conn.execute(
                select(point_transactions).where(point_transactions.c.reference == reference)
            ).mappings().first()
        return _row(found) if found else None

    # -- the lease and state moves ------------------------------------------------------

    def claim(self, reference: str, lease_seconds: float) -> LedgerRow | None:
        """Take the row's lease if it is open and nobody holds it; None otherwise."""
        now = utcnow()
        t = point_transactions.c
        with self.engine.begin() as conn:
            taken = conn.execute(
                update(point_transactions)
                .where(t.reference == reference, t.state.in_(OPEN_STATES),
                       or_(t.lease_until.is_(None), t.lease_until < now))
                # The holder decides when the row is next due; should it die, the expired
                # lease alone makes the row due (see lost_received).
                .values(lease_until=now + timedelta(seconds=lease_seconds), next_attempt_at=None)
                .returning(*point_transactions.c)
            ).mappings().first()
        return _row(taken) if taken is not None else None

    def renew(self, reference: str, lease: datetime, lease_seconds: float) -> datetime:
        """Extend the holder's lease to `lease_seconds` from now; returns the new
        lease_until (every later move must give it), or LeaseLost."""
        until = utcnow() + timedelta(seconds=lease_seconds)
        self._set(reference, lease, lease_until=until)
        return until

    # Each move below takes the holder's `lease` (the row's lease_until as claimed): with
    # it, the move happens only while that lease is still the row's, else LeaseLost.

    def release(
        self, reference: str, retry_in: float | None = None, lease: datetime | None = None
    ) -> None:
        """Give the lease back; `retry_in` seconds is when the sweep may try the row again."""
        now = utcnow()
        retry_at = now + timedelta(seconds=retry_in) if retry_in is not None else None
        self._set(reference, lease, lease_until=None, next_attempt_at=retry_at)

    def sending(self, reference: str, lease: datetime | None = None) -> None:
        """Committed before the request leaves: if we die, the row is known to be uncertain."""
        now = utcnow()
        t = point_transactions.c
        self._set(reference, lease, attempts=t.attempts + 1, uncertain=True,
                  first_sent_at=func.coalesce(t.first_sent_at, now))

    def not_booked(self, reference: str, reason: str, lease: datetime | None = None) -> None:
        """Treazure surely did not book the last request (refused before any work)."""
        self._set(reference, lease, uncertain=False, reason=reason)

    def still_uncertain(self, reference: str, reason: str, lease: datetime | None = None) -> None:
        self._set(reference, lease, reason=reason)

    def booked(  # and lets go of the lease: what remains is Engage's, for the drainer
        self, reference: str, balance_cents: int | None, mutated_us: int | None,
        lease: datetime | None = None,
    ) -> None:
        self._set(reference, lease, state="booked", uncertain=False, reason=None,
                  balance_cents=balance_cents, balance_mutated_us=mutated_us,
                  booked_at=utcnow(), next_attempt_at=None, lease_until=None)

    def set_booking_time(self, reference: str, balance_cents: int, mutated_us: int) -> None:
        self._set(reference, None, balance_cents=balance_cents, balance_mutated_us=mutated_us)

    def fail(self, reference: str, reason: str, lease: datetime | None = None) -> None:
        self._set(reference, lease, state="failed", uncertain=False, reason=reason[:2000],
                  lease_until=None, next_attempt_at=None)

    def _set(self, reference: str, lease: datetime | None, **values: Any) -> None:
        t = point_transactions.c
        condition = t.reference == reference
        if lease is not None:
            condition = and_(condition, t.lease_until == lease)
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(point_transactions).where(condition).values(updated_at=utcnow(), **values)
            ).rowcount
        if lease is not None and changed != 1:
            raise LeaseLost(f"transaction {reference}: lease ran out; another worker may hold it")

    # -- Engage side -----------------------------------------------------------------------

    def due_booked(self, limit: int) -> list[LedgerRow]:
        """Booked rows waiting for Engage, oldest booking first."""
        now = utcnow()
        t = point_transactions.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(point_transactions)
                .where(t.state == "booked",
                       or_(t.next_attempt_at.is_(None), t.next_attempt_at <= now))
                .order_by(t.booked_at).limit(limit)
            ).mappings().all()
        return [_row(r) for r in rows]

    def next_booked_due(self) -> datetime | None:
        """When the earliest booked row may be pushed again (None: no booked row)."""
        t = point_transactions.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.next_attempt_at).where(t.state == "booked")
                .order_by(t.next_attempt_at.is_not(None), t.next_attempt_at).limit(1)
            ).all()
        if not rows:
            return None
        return _as_utc(rows[0][0]) or utcnow()

    def applied(
        self,
        references: Iterable[str],
        sent: Sequence[tuple[str, int, int]],
        reason: str | None = None,
    ) -> None:
        """Mark rows applied and record what Engage was sent (contact, cents, mutated µs),
        in one transaction; the record never moves a contact's guard back in time."""
        now = utcnow()
        refs = list(references)
        with self.engine.begin() as conn:
            if refs:
                conn.execute(
                    update(point_transactions)
                    .where(point_transactions.c.reference.in_(refs))
                    .values(state="applied", applied_at=now, updated_at=now, reason=reason,
                            next_attempt_at=None)
                )
            save_sent_balances(conn, sent)

    def defer(self, references: Iterable[str], seconds: float, reason: str | None = None) -> None:
        refs = list(references)
        if not refs:
            return
        now = utcnow()
        values: dict[str, Any] = {"next_attempt_at": now + timedelta(seconds=seconds),
                                  "updated_at": now}
        if reason is not None:
            values["reason"] = reason[:2000]
        with self.engine.begin() as conn:
            conn.execute(update(point_transactions)
                         .where(point_transactions.c.reference.in_(refs)).values(**values))

    def fail_many(self, reasons: dict[str, str]) -> None:
        for reference, reason in reasons.items():
            self.fail(reference, reason)

    # -- the sweep and operators -----------------------------------------------------------

    def lost_received(self, stale_seconds: float, limit: int = 1000) -> list[LedgerRow]:
        """Received rows whose task is presumed lost: unleased (or lease run out), and
        either due for a retry, or with no retry planned and either a lease that ran out
        (its holder is gone: a live one renews it) or untouched for `stale_seconds`."""
        now = utcnow()
        t = point_transactions.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(point_transactions).where(
                    t.state == "received",
                    or_(t.lease_until.is_(None), t.lease_until < now),
                    or_(t.next_attempt_at <= now,
                        and_(t.next_attempt_at.is_(None),
                             or_(t.lease_until < now,
                                 t.updated_at < now - timedelta(seconds=stale_seconds)))),
                ).order_by(t.created_at).limit(limit)
            ).mappings().all()
        return [_row(r) for r in rows]

    def never_sent(
        self, source: str, since: datetime, after: str = "", limit: int = 500
    ) -> list[LedgerRow]:
        """Rows of `source` recorded since `since` that no worker ever took up (received,
        never attempted, unleased, no retry planned): their message may never have been
        queued. By reference, from after `after`, for paging."""
        t = point_transactions.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(point_transactions).where(
                    t.source == source, t.created_at >= since, t.reference > after,
                    t.state == "received", t.attempts == 0, t.lease_until.is_(None),
                    t.next_attempt_at.is_(None),
                ).order_by(t.reference).limit(limit)
            ).mappings().all()
        return [_row(r) for r in rows]

    def listing(self, state: str | None = None, limit: int = 50) -> list[LedgerRow]:
        t = point_transactions.c
        query = select(point_transactions).order_by(t.updated_at.desc()).limit(limit)
        if state is not None:
            query = query.where(t.state == state)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [_row(r) for r in rows]

    def counts_by_state(self) -> dict[str, int]:
        t = point_transactions.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.state, func.count()).group_by(t.state)).all()
        return {state: int(n) for state, n in rows}

    def state_totals(self) -> dict[str, int]:
        """Rows in each state, every state named, read cheaply (for each /metrics scrape):
        the open states counted through the state index, the final ones from their
        running totals. `counts_by_state` counts the whole table (an operator's query)."""
        state = point_transactions.c.state
        with self.engine.connect() as conn:
            received, booked = conn.execute(
                select(func.count().filter(state == "received"),
                       func.count().filter(state == "booked"))
                .where(state.in_(OPEN_STATES))
            ).one()
            totals = conn.execute(
                select(ledger_state_totals.c.state, ledger_state_totals.c.count)).all()
        return {"received": int(received), "booked": int(booked), "applied": 0, "failed": 0,
                **{name: int(n) for name, n in totals}}

    def reopen(self, reference: str) -> LedgerRow | None:
        """Replay a failed row: back to `booked` when Treazure already booked it (only
        Engage is retried), else back to `received` (the history check still guards)."""
        row = self.get(reference)
        if row is None or row.state != "failed" or row.amount_cents is None:
            return row
        state = "booked" if row.balance_cents is not None else "received"
        t = point_transactions.c
        with self.engine.begin() as conn:
            conn.execute(
                update(point_transactions)
                .where(t.reference == reference, t.state == "failed")
                .values(state=state, reason=None, next_attempt_at=None, lease_until=None,
                        attempts=0, updated_at=utcnow())
            )
        return self.get(reference)

    def oldest_open_created_at(self) -> datetime | None:
        """When the oldest transaction still `received` or `booked` was recorded (None: no
        open row); few rows are open at a time, so this stays cheap."""
        t = point_transactions.c
        with self.engine.connect() as conn:
            value = conn.execute(
                select(func.min(t.created_at)).where(t.state.in_(OPEN_STATES))
            ).scalar()
        return _as_utc(value)
