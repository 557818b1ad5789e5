"""Setting booked balances in Engage: one drain at a time pushes every booked row, many
contacts per request (Engage allows 50 requests/s for everything), scheduled once for many
bookings, under the same per-contact claims and the same guard as the balance sync (see
pushguard), so neither flow overwrites the other's newer balance."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from worker.base.http import Rejected, RemoteError
from worker.base.locks import held_lock
from worker.base.money import cents_to_decimal, from_utc_micros
from worker.flows.parts import Parts
from worker.flows.points.receipts import booking_time
from worker.flows.points.ties import balance_at
from worker.store.database import Store
from worker.store.engine import utcnow
from worker.store.ledger import Ledger, LedgerRow
from worker.systems.engage.client import Balance

log = logging.getLogger("pointsync.points")

DRAIN_LOCK = "pointsync:lock:points_drain"
DRAIN_LOCK_TTL = 30
DRAIN_BATCH = 1000
# A contact the sync is pushing right now is tried again this soon.
BUSY_RETRY_SECONDS = 0.1
# A booked row whose Engage push failed in a way that may pass is tried again after this.
ENGAGE_RETRY_SECONDS = 30.0
# One scheduled drain at a time; the mark expires should its message be lost (the sweep
# pushes what waits in any case).
PUSH_TURN = "pointsync:points:push_turn"
PUSH_TURN_TTL_MS = 10_000


async def drain(parts: Parts, budget_seconds: float = 30.0) -> int:
    """Push the balances of booked rows to Engage; returns how many rows were applied.

    One drainer at a time (a Redis lock). Each request first waits for its slot of
    Engage's shared rate limit and only then takes every row booked by then, so the wait
    is a gathering window: many transactions share one of Engage's 50 requests a second.
    """
    ledger = Ledger(parts.store)
    applied = 0
    deadline = time.monotonic() + budget_seconds
    async with held_lock(parts.redis, DRAIN_LOCK, DRAIN_LOCK_TTL) as acquired:
        if not acquired:
            return 0
        while time.monotonic() < deadline and ledger.due_booked(1):
            await parts.engage.wait_for_slot()
            applied += await _apply(parts, ledger, ledger.due_booked(DRAIN_BATCH))
    return applied


async def take_push_turn(redis: Any) -> bool:
    """Whether the caller should schedule a drain: true for one caller until `end_push_turn`.

    Booking tasks do not push themselves: they leave it to one scheduled drain, which
    finds many rows waiting. A drain ends its turn before it looks for more work, so a
    row booked meanwhile is either seen by that look or schedules the next drain itself.
    """
    return bool(await redis.set(PUSH_TURN, "1", nx=True, px=PUSH_TURN_TTL_MS))


async def end_push_turn(redis: Any) -> None:
    await redis.delete(PUSH_TURN)


def seconds_until_due(store: Store) -> float | None:
    """When the earliest booked row may be pushed (None: no booked row)."""
    due = Ledger(store).next_booked_due()
    return None if due is None else max(0.0, (due - utcnow()).total_seconds())


async def _apply(parts: Parts, ledger: Ledger, rows: list[LedgerRow]) -> int:
    """Push the newest balance of each contact in `rows`, in one request whose rate-limit
    slot the caller already waited for."""
    rows = await _with_booking_times(parts, ledger, rows)
    # A contact booked several times: its newest balance covers the older ones.
    newest: dict[str, LedgerRow] = {}
    covered: dict[str, list[str]] = {}
    for row in rows:
        held = newest.get(row.contact_id)
        if held is None or _order(row) > _order(held):
            newest[row.contact_id] = row
        covered.setdefault(row.contact_id, []).append(row.reference)
    tied = _tied_contacts(rows, newest)
    heads = list(newest.values())
    claim = await parts.guard.claim_for_points([r.contact_id for r in heads])
    busy = [heads[i] for i in claim.busy]
    ledger.defer(_refs(busy, covered), BUSY_RETRY_SECONDS)
    mine = [heads[i] for i in claim.claimed]
    superseded = [heads[i] for i in claim.newer]
    pushed: list[LedgerRow] = []
    try:
        if mine:
            states = parts.store.contact_states([r.contact_id for r in mine])
            to_push = []
            for row in mine:
                state = states.get(row.contact_id)
                if row.contact_id in tied or _ties_with_sent(row, state):
                    settled = await _settle_tie(parts, ledger, row, covered)
                    if settled is None:
                        continue  # deferred: the history will say later
                    row = settled
                if state is None or state.sent_mutated_us is None or _newer(row, state):
                    to_push.append(row)
                else:
                    superseded.append(row)  # Engage already holds this or a newer balance
            pushed = await _push(parts, ledger, to_push, covered)  # spends the slot
        if superseded:
            ledger.applied(_refs(superseded, covered), (),
                           reason="Engage already had this or a newer balance")
    finally:
        await parts.guard.release_points(
            claim.token, [r.contact_id for r in mine],
            [(r.contact_id, r.booked_balance[1]) for r in pushed])
    return len(_refs(pushed, covered)) + len(_refs(superseded, covered))


def _newer(row: LedgerRow, state: Any) -> bool:
    """Whether the row's balance is newer than what Engage was sent. At the same time with
    other cents it is: a booked row at a tie has by then been settled from the history."""
    if row.balance_mutated_us > state.sent_mutated_us:
        return True
    return row.balance_mutated_us == state.sent_mutated_us and \
        row.balance_cents != state.sent_cents


def _tied_contacts(rows: list[LedgerRow], newest: dict[str, LedgerRow]) -> set[str]:
    """Contacts with another row at their newest row's time and other cents."""
    return {
        row.contact_id for row in rows
        if (head := newest[row.contact_id]) is not row
        and row.balance_mutated_us == head.balance_mutated_us
        and row.balance_cents != head.balance_cents
    }


def _ties_with_sent(row: LedgerRow, state: Any) -> bool:
    return state is not None and state.sent_mutated_us == row.balance_mutated_us and \
        state.sent_cents != row.balance_cents


async def _settle_tie(
    parts: Parts, ledger: Ledger, row: LedgerRow, covered: dict[str, list[str]]
) -> LedgerRow | None:
    """The row carrying the balance Treazure's history shows last at its time, or None
    (its contact's rows deferred) while the history cannot say."""
    mutated_us = row.balance_mutated_us or 0
    cents = await balance_at(parts, row.contact_id, mutated_us)
    if cents is None:
        ledger.defer(covered[row.contact_id], ENGAGE_RETRY_SECONDS,
                     "booked; two balances at one Treazure time, waiting for its history")
        return None
    return dataclasses.replace(row, balance_cents=cents)


async def _push(
    parts: Parts, ledger: Ledger, rows: list[LedgerRow], covered: dict[str, list[str]]
) -> list[LedgerRow]:
    """Push the rows' balances; returns those Engage accepted (recorded as applied)."""
    if not rows:
        return []
    balances = [
        Balance(r.contact_id, cents_to_decimal(cents), from_utc_micros(mutated_us))
        for r in rows for cents, mutated_us in [r.booked_balance]
    ]
    try:
        result = await parts.engage.push_balances(balances, slot_reserved=True)
    except Rejected as exc:
        ledger.fail_many(dict.fromkeys(_refs(rows, covered),
                                       f"booked in Treazure; Engage refused the balance: {exc}"))
        return []
    except RemoteError as exc:
        log.warning("Engage push of %d balance(s) failed, retried later: %s", len(rows), exc)
        ledger.defer(_refs(rows, covered), ENGAGE_RETRY_SECONDS, f"Engage: {exc}")
        return []
    refused = [r for r in rows if r.contact_id in result.not_accepted]
    ledger.fail_many({
        ref: f"booked in Treazure; Engage did not accept the balance: "
             f"{result.not_accepted[r.contact_id]}"
        for r in refused for ref in covered[r.contact_id]})
    accepted = [r for r in rows if r.contact_id not in result.not_accepted]
    ledger.applied(_refs(accepted, covered), [
        (r.contact_id, *r.booked_balance) for r in accepted])
    return accepted


async def _with_booking_times(
    parts: Parts, ledger: Ledger, rows: list[LedgerRow]
) -> list[LedgerRow]:
    """Rows whose booking time is unknown (the history was not readable right after the
    booking) get it now; those still without one wait."""
    complete = [r for r in rows if r.balance_mutated_us is not None and r.balance_cents is not None]
    for row in rows:
        if row.balance_mutated_us is not None and row.balance_cents is not None:
            continue
        booking = await booking_time(parts, row)
        if booking is None:
            ledger.defer([row.reference], ENGAGE_RETRY_SECONDS,
                         "booked; waiting for Treazure's history to show when")
            continue
        ledger.set_booking_time(row.reference, booking.balance_cents, booking.mutated_us)
        complete.append(ledger.row(row.reference))
    return complete


def _order(row: LedgerRow) -> tuple[int, datetime]:
    return (row.balance_mutated_us or 0, row.booked_at or row.created_at)


def _refs(rows: Sequence[LedgerRow], covered: dict[str, list[str]]) -> list[str]:
    return [ref for row in rows for ref in covered[row.contact_id]]
