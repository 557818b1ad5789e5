"""The point-transaction ledger: one row per reference, and the database is the truth.

States: `received` (recorded, not yet booked) → `booked` (Treazure holds it; the new balance
is known) → `applied` (that balance, or a newer one, is what Engage was sent); or `failed`
with a reason. A worker works on a row only while it holds the row's lease, taken with a
conditional UPDATE, so two workers never book the same row at once even if Redis (broker,
locks) restarts. `uncertain` marks a row whose last booking request may have reached
Treazure: before any new send, Treazure's history is read for its receiptNr.

The record, the lease and the sweep are the outbox's (worker/store/outbox.py); this module
adds what is the ledger's own: the request's columns, the booking and Engage's side.
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
    String,
    Table,
    Text,
    bindparam,
    func,
    select,
    text,
)
from sqlalchemy.sql.base import Executable

from worker.base.point_request import PointRequest
from worker.store.contacts import save_sent_balances
from worker.store.database import Store
from worker.store.engine import metadata, utcnow
from worker.store.outbox import LeaseLost, Outbox, outbox_columns, utc_row

__all__ = ["OPEN_STATES", "LeaseLost", "Ledger", "LedgerRow", "ledger_state_totals",
           "point_transactions"]

point_transactions = Table(
    "point_transactions",
    metadata,
    # reference, state (received | booked | applied | failed), reason, attempts, uncertain,
    # lease_until, next_attempt_at, created_at, updated_at
    *outbox_columns("point_transactions", key="reference"),
    Column("contact_id", String(64), nullable=False),
    Column("amount_cents", BigInteger),  # NULL only for a request recorded as invalid
    Column("description", Text),
    Column("source", String(16), nullable=False),  # task | webhook | cli
    Column("balance_cents", BigInteger),  # Treazure's balance right after the booking
    Column("balance_mutated_us", BigInteger),  # when Treazure booked it (its history time)
    Column("first_sent_at", DateTime(timezone=True)),
    Column("booked_at", DateTime(timezone=True)),
    Column("applied_at", DateTime(timezone=True)),
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

    @property
    def booked_balance(self) -> tuple[int, int]:
        """(cents, Treazure's mutated µs) of a booking whose time is known; only such rows
        are pushed to Engage."""
        if self.balance_cents is None or self.balance_mutated_us is None:
            raise ValueError(f"transaction {self.reference}: booking time not known yet")
        return self.balance_cents, self.balance_mutated_us

    def same_request(self, request: PointRequest) -> bool:
        return (self.contact_id, self.amount_cents, self.description) == (
            request.contact_id, request.amount_cents, request.description)


def _row(data: dict[str, Any]) -> LedgerRow:
    return LedgerRow(**data)


# -- plain SQL for the hot statements -------------------------------------------------------
# A webhook's record, the batch claim, the send and the booking run once per transaction:
# written once as SQL with typed parameters, they skip building, hashing and compiling an
# expression on every call. Times and booleans are bound through the columns' own types,
# so each dialect stores and compares them as the expression statements do.

_STAMP = DateTime(timezone=True)
_ALL = ", ".join(c.name for c in point_transactions.c)


def _sql(statement: str, *, returning: bool = False, **types: Any) -> Executable:
    bound = text(statement).bindparams(
        *(bindparam(name, type_=kind) for name, kind in types.items()))
    # RETURNING rows are read as the table's columns (SQLite hands times back as text).
    return bound.columns(*point_transactions.c) if returning else bound


_RECORD = _sql(
    "INSERT INTO point_transactions (reference, contact_id, amount_cents, description, "
    "source, state, attempts, uncertain, created_at, updated_at) VALUES (:reference, "
    ":contact_id, :amount_cents, :description, :source, 'received', 0, :no, :now, :now) "
    f"ON CONFLICT (reference) DO NOTHING RETURNING {_ALL}",
    returning=True, no=Boolean(), now=_STAMP)
_GET = _sql(f"SELECT {_ALL} FROM point_transactions WHERE reference = :reference",
            returning=True)
# Taken together: received webhook rows nobody holds whose next attempt is due; the outer
# condition repeats the inner one, so a row another claimer took meanwhile is left alone.
_DUE_RECEIVED = ("state = 'received' AND (lease_until IS NULL OR lease_until < :now) "
                 "AND (next_attempt_at IS NULL OR next_attempt_at <= :now)")
# The keys are chosen once (a CTE, materialized: PostgreSQL would otherwise run a
# SKIP LOCKED subquery again per row and take more than the limit); on PostgreSQL rows
# another claimer is updating are skipped, not waited for.
_CLAIM_DUE = (
    "WITH due AS MATERIALIZED (SELECT reference FROM point_transactions WHERE "
    f"{_DUE_RECEIVED} AND source = :source ORDER BY created_at LIMIT :limit{{lock}}) "
    "UPDATE point_transactions SET lease_until = :until, next_attempt_at = NULL "
    f"WHERE reference IN (SELECT reference FROM due) AND {_DUE_RECEIVED} RETURNING {_ALL}")
_CLAIM_DUE_TYPES = {"now": _STAMP, "until": _STAMP}
_CLAIM_DUE_SQLITE = _sql(_CLAIM_DUE.format(lock=""), returning=True, **_CLAIM_DUE_TYPES)
_CLAIM_DUE_PG = _sql(_CLAIM_DUE.format(lock=" FOR UPDATE SKIP LOCKED"), returning=True,
                     **_CLAIM_DUE_TYPES)
_SENDING = _sql(
    "UPDATE point_transactions SET attempts = attempts + 1, uncertain = :yes, "
    "first_sent_at = COALESCE(first_sent_at, :now), lease_until = :until, updated_at = :now "
    "WHERE reference = :reference AND lease_until = :lease",
    yes=Boolean(), now=_STAMP, until=_STAMP, lease=_STAMP)
_BOOKED = _sql(
    "UPDATE point_transactions SET state = 'booked', uncertain = :no, reason = NULL, "
    "balance_cents = :balance_cents, balance_mutated_us = :mutated_us, booked_at = :now, "
    "next_attempt_at = NULL, lease_until = NULL, updated_at = :now "
    "WHERE reference = :reference AND lease_until = :lease",
    no=Boolean(), now=_STAMP, lease=_STAMP)


class Ledger:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.engine = store.engine
        self.outbox = Outbox(self.engine, point_transactions, open_states=OPEN_STATES,
                             make_row=_row, noun="transaction")

    # -- recording --------------------------------------------------------------------

    def record(self, request: PointRequest, source: str) -> tuple[LedgerRow, bool]:
        """The row for this reference, and whether this call created it.

        An existing row is returned as it is: the same reference books nothing new.
        """
        with self.engine.begin() as conn:
            created = conn.execute(_RECORD, {
                "reference": request.reference, "contact_id": request.contact_id,
                "amount_cents": request.amount_cents, "description": request.description,
                "source": source, "no": False, "now": utcnow(),
            }).mappings().first()
        if created is not None:
            return _row(utc_row(created)), True
        return self.row(request.reference), False

    def record_invalid(
        self, reference: str, contact_id: Any, description: Any, source: str, reason: str
    ) -> tuple[LedgerRow, bool]:
        """Keep a refused webhook event as `failed`, so an operator sees it (nothing is booked)."""
        now = utcnow()
        return self.outbox.insert_once({
            "reference": reference, "contact_id": str(contact_id)[:64],
            "amount_cents": None,
            "description": description if isinstance(description, str) else None,
            "source": source, "state": "failed", "reason": reason, "attempts": 0,
            "uncertain": False, "created_at": now, "updated_at": now,
        })

    def get(self, reference: str) -> LedgerRow | None:
        with self.engine.connect() as conn:
            found = conn.execute(_GET, {"reference": reference}).mappings().first()
        return None if found is None else _row(utc_row(found))

    def row(self, reference: str) -> LedgerRow:
        """The row of a reference the caller recorded or claimed (rows are never deleted
        while open)."""
        found = self.get(reference)
        if found is None:
            raise LookupError(f"no transaction {reference!r} is recorded")
        return found

    # -- the lease and state moves ------------------------------------------------------

    def claim(self, reference: str, lease_seconds: float) -> LedgerRow | None:
        """Take the row's lease if it is open and nobody holds it; None otherwise."""
        return self.outbox.claim(reference, lease_seconds)

    def claim_due(self, source: str, lease_seconds: float, limit: int) -> list[LedgerRow]:
        """Take the lease of up to `limit` received rows of `source` that nobody holds and
        whose next attempt is due (or was never planned), oldest first, in one statement."""
        now = utcnow()
        claim = _CLAIM_DUE_PG if self.engine.dialect.name == "postgresql" else _CLAIM_DUE_SQLITE
        with self.engine.begin() as conn:
            taken = conn.execute(claim, {
                "now": now, "until": now + timedelta(seconds=lease_seconds),
                "source": source, "limit": limit}).mappings().all()
        return sorted((_row(utc_row(r)) for r in taken), key=lambda r: r.created_at)

    def renew(self, reference: str, lease: datetime, lease_seconds: float) -> datetime:
        """Extend the holder's lease to `lease_seconds` from now; returns the new
        lease_until (every later move must give it), or LeaseLost."""
        return self.outbox.renew(reference, lease, lease_seconds)

    def renew_sending(self, reference: str, lease: datetime, lease_seconds: float) -> datetime:
        """`renew` and `sending` in one statement, just before a request leaves: the lease
        is a full one again, and the row is uncertain with its attempt counted."""
        now = utcnow()
        until = now + timedelta(seconds=lease_seconds)
        with self.engine.begin() as conn:
            changed = conn.execute(_SENDING, {
                "yes": True, "now": now, "until": until, "reference": reference,
                "lease": lease}).rowcount
        if changed != 1:
            raise LeaseLost(f"transaction {reference}: lease ran out; another worker may hold it")
        return until

    # Each move below takes the holder's `lease` (the row's lease_until as claimed): with
    # it, the move happens only while that lease is still the row's, else LeaseLost.

    def release(
        self, reference: str, retry_in: float | None = None, lease: datetime | None = None
    ) -> None:
        """Give the lease back; `retry_in` seconds is when the sweep may try the row again."""
        self.outbox.release(reference, retry_in, lease)

    def sending(self, reference: str, lease: datetime | None = None) -> None:
        """Committed before the request leaves: if we die, the row is known to be uncertain."""
        self.outbox.mark_uncertain(reference, lease, first_sent_at=func.coalesce(
            point_transactions.c.first_sent_at, utcnow()))

    def not_booked(self, reference: str, reason: str, lease: datetime | None = None) -> None:
        """Treazure surely did not book the last request (refused before any work)."""
        self.outbox.move(reference, lease, uncertain=False, reason=reason)

    def still_uncertain(self, reference: str, reason: str, lease: datetime | None = None) -> None:
        self.outbox.move(reference, lease, reason=reason)

    def booked(  # and lets go of the lease: what remains is Engage's, for the drainer
        self, reference: str, balance_cents: int | None, mutated_us: int | None,
        lease: datetime | None = None,
    ) -> None:
        if lease is not None:  # the holder's move, every booking's: plain SQL
            with self.engine.begin() as conn:
                changed = conn.execute(_BOOKED, {
                    "no": False, "balance_cents": balance_cents, "mutated_us": mutated_us,
                    "now": utcnow(), "reference": reference, "lease": lease}).rowcount
            if changed != 1:
                raise LeaseLost(
                    f"transaction {reference}: lease ran out; another worker may hold it")
            return
        self.outbox.move(reference, lease, state="booked", uncertain=False, reason=None,
                         balance_cents=balance_cents, balance_mutated_us=mutated_us,
                         booked_at=utcnow(), next_attempt_at=None, lease_until=None)

    def set_booking_time(self, reference: str, balance_cents: int, mutated_us: int) -> None:
        self.outbox.move(reference, None, balance_cents=balance_cents,
                         balance_mutated_us=mutated_us)

    def fail(self, reference: str, reason: str, lease: datetime | None = None) -> None:
        self.outbox.fail(reference, reason, lease)

    # -- Engage side -----------------------------------------------------------------------

    def due_booked(self, limit: int) -> list[LedgerRow]:
        """Booked rows waiting for Engage, oldest booking first."""
        return self.outbox.due("booked", limit, order_by=point_transactions.c.booked_at)

    def next_booked_due(self) -> datetime | None:
        """When the earliest booked row may be pushed again (None: no booked row)."""
        return self.outbox.next_due("booked")

    def applied(
        self,
        references: Iterable[str],
        sent: Sequence[tuple[str, int, int]],
        reason: str | None = None,
    ) -> None:
        """Mark rows applied and record what Engage was sent (contact, cents, mutated µs),
        in one transaction; the record never moves a contact's guard back in time."""
        now = utcnow()
        with self.engine.begin() as conn:
            self.outbox.move_many(conn, references, state="applied", applied_at=now,
                                  updated_at=now, reason=reason, next_attempt_at=None)
            save_sent_balances(conn, sent)

    def defer(self, references: Iterable[str], seconds: float, reason: str | None = None) -> None:
        self.outbox.defer(references, seconds, reason)

    def fail_many(self, reasons: dict[str, str]) -> None:
        for reference, reason in reasons.items():
            self.fail(reference, reason)

    # -- the sweep and operators -----------------------------------------------------------

    def lost_received(self, stale_seconds: float, limit: int = 1000) -> list[LedgerRow]:
        """Received rows whose task is presumed lost (see `Outbox.lost`)."""
        return self.outbox.lost("received", stale_seconds, limit)

    def never_sent(
        self, source: str, since: datetime, after: str = "", limit: int = 500
    ) -> list[LedgerRow]:
        """Rows of `source` recorded since `since` that no worker ever took up (received,
        never attempted, unleased, no retry planned): their message may never have been
        queued. By reference, from after `after`, for paging."""
        t = point_transactions.c
        return self.outbox.rows(
            t.source == source, t.created_at >= since, t.reference > after,
            t.state == "received", t.attempts == 0, t.lease_until.is_(None),
            t.next_attempt_at.is_(None), order_by=t.reference, limit=limit)

    def listing(self, state: str | None = None, limit: int = 50) -> list[LedgerRow]:
        return self.outbox.listing(state, limit)

    def counts_by_state(self) -> dict[str, int]:
        return self.outbox.counts_by_state()

    def state_totals(self) -> dict[str, int]:
        """Rows in each state, every state named, read cheaply (for each /metrics scrape):
        the open states counted through the state index, the final ones from their
        running totals. `counts_by_state` counts the whole table (an operator's query)."""
        open_counts = self.outbox.open_counts()
        with self.engine.connect() as conn:
            totals = conn.execute(
                select(ledger_state_totals.c.state, ledger_state_totals.c.count)).all()
        return {**open_counts, "applied": 0, "failed": 0,
                **{name: int(n) for name, n in totals}}

    def reopen(self, reference: str) -> LedgerRow | None:
        """Replay a failed row: back to `booked` when Treazure already booked it (only
        Engage is retried), else back to `received` (the history check still guards)."""
        row = self.get(reference)
        if row is None or row.state != "failed" or row.amount_cents is None:
            return row
        return self.outbox.reopen(
            reference, "booked" if row.balance_cents is not None else "received")

    def oldest_open_created_at(self) -> datetime | None:
        """When the oldest transaction still `received` or `booked` was recorded (None: no
        open row); few rows are open at a time, so this stays cheap."""
        return self.outbox.oldest_open_created_at()
