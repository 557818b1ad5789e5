"""Booking a recorded transaction in Treazure exactly once: a worker that holds the row's
lease (see lease.py) books it, and the new balance waits for the drain (see drain.py).

- before a send, the row is marked `uncertain` and committed, so a worker killed while the
  request is out leaves a row that the next attempt resolves first;
- an uncertain row is resolved by reading the account's history for its receiptNr: found
  means booked, not found means it may be sent again;
- 429 and connect errors are surely not booked: retried with backoff; a read timeout, a
  dropped connection or a 5xx may be booked: uncertain, resolved after a short pause
  (POINTS_SETTLE_SECONDS) that no process waits out: the row is let go, due again after
  the pause, and the task queued again for then (see `Outcome.retry_in`);
- a 4xx ends the row `failed` with Treazure's reason (422: insufficient balance).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from worker.base.arguments import InvalidArgument
from worker.base.backoff import doubled, jittered
from worker.base.http import Ambiguous, Rejected, RemoteError, Retryable
from worker.base.logs import bind_log_context
from worker.base.point_request import PointRequest
from worker.base.settings import Settings
from worker.flows.lease import Lease
from worker.flows.parts import Parts
from worker.flows.points.histories import Means
from worker.flows.points.receipts import booking_time, read_booking
from worker.flows.points.record import Outcome, record
from worker.store.engine import utcnow
from worker.store.ledger import LeaseLost, Ledger, LedgerRow

log = logging.getLogger("pointsync.points")

# A row left for later is due again after this, doubling with each booking attempt made
# (up to POINTS_RETRY_MAX_SECONDS); with the default 10 attempts, Treazure may be away for
# about six minutes before a transaction ends failed.
RETRY_BASE_SECONDS = 1.0


async def add_points(parts: Parts, request: PointRequest, source: str) -> Outcome:
    """Record, book and apply one transaction; the same reference again books nothing."""
    row, created = record(parts.store, request, source)
    if row.final:
        return Outcome.of(row, duplicate=not created)
    return await process(parts, request.reference)


async def process(parts: Parts, reference: str) -> Outcome:
    """Move an open row on as far as it goes now (booked, then applied)."""
    bind_log_context(reference=reference)
    ledger = Ledger(parts.store)
    row = ledger.claim(reference, parts.settings.POINTS_LEASE_SECONDS)
    if row is None:  # final, or another worker holds it right now
        current = ledger.get(reference)
        if current is None:
            raise InvalidArgument(f"reference: no transaction {reference!r} is recorded")
        return Outcome.of(current, duplicate=current.final, in_progress=not current.final)
    retry_in = await work_claimed(parts, ledger, row)
    # A booked row's balance goes to Engage with the next drain (see take_push_turn).
    return Outcome.of(ledger.row(reference), retry_in=retry_in)


async def work_claimed(parts: Parts, ledger: Ledger, row: LedgerRow,
                       means: Means | None = None) -> float | None:
    """Book a row whose lease this worker just took, and let go of it; returns the seconds
    until the row is due again when it was let go unfinished (None: booked or failed, or
    the lease was lost to another worker). `means`: where its calls go and its history
    is kept (a single booking's unless given; a round gives its own, see batch.py)."""
    means = means or Means.single(parts)
    reference = row.reference
    assert row.lease_until is not None
    lease = Lease(reference, row.lease_until, parts.settings.POINTS_LEASE_SECONDS)
    retry_in: float | None = None
    settled = False  # booked or failed: those moves let go of the lease themselves
    released = False
    try:
        if row.state == "received":
            try:
                async with lease.kept(ledger):
                    retry_in = await _book(parts, ledger, row, lease, means)
                    settled = retry_in is None
            except TimeoutError:  # the lease could not be kept: the work was cut short
                retry_in = 0.0
    finally:
        if not settled:
            with contextlib.suppress(LeaseLost):
                ledger.release(reference, retry_in, lease.until)
                released = True
    return retry_in if released else None


@dataclass(frozen=True)
class _TryAgain:
    after: float
    reason: str
    # The pause is for Treazure to settle a send that may have been booked: nothing to do
    # meanwhile, so the row is let go for it instead of this process waiting it out.
    settling: bool = False


async def _book(parts: Parts, ledger: Ledger, row: LedgerRow, lease: Lease,
                means: Means) -> float | None:
    """Try to book a few times here; returns when the row should be tried again (None: the
    row is booked or failed)."""
    s = parts.settings
    for attempt in range(1, s.POINTS_INLINE_ATTEMPTS + 1):
        outcome = await _book_once(parts, ledger, row, lease, means)
        if outcome is None:
            return None
        row = ledger.row(row.reference)
        log.warning("transaction %s not booked yet (attempt %d): %s",
                    row.reference, row.attempts, outcome.reason)
        if outcome.settling and outcome.after > 0:
            return outcome.after
        if row.attempts >= s.POINTS_MAX_ATTEMPTS and not row.uncertain:
            ledger.fail(row.reference,
                        f"gave up after {row.attempts} attempts: {outcome.reason}", lease.until)
            return None
        if attempt < s.POINTS_INLINE_ATTEMPTS:
            await asyncio.sleep(outcome.after)
    return retry_pause(s, row.attempts)


def retry_pause(settings: Settings, attempts: int) -> float:
    """The pause before a row that failed its inline attempts is tried again: small at
    first, doubling with each attempt made."""
    return doubled(RETRY_BASE_SECONDS, attempts - 1, settings.POINTS_RETRY_MAX_SECONDS)


async def _book_once(
    parts: Parts, ledger: Ledger, row: LedgerRow, lease: Lease, means: Means
) -> _TryAgain | None:
    s, ref = parts.settings, row.reference
    if row.uncertain:
        # The last request may have been booked: its receiptNr in the history decides.
        # The pause was let go for (see `_book`); a row taken early (a redelivery, say)
        # waits out the rest here: queueing it again would move updated_at, and the pause.
        settle = s.POINTS_SETTLE_SECONDS - (utcnow() - row.updated_at).total_seconds()
        if settle > 0:
            await asyncio.sleep(settle)
        try:
            found = await read_booking(parts, row, means)
        except RemoteError as exc:
            return _TryAgain(_pause(exc, 1), f"cannot read the history to resolve: {exc}")
        if found is not None:
            log.info("transaction %s was booked by an earlier attempt", ref)
            ledger.booked(ref, found.balance_cents, found.mutated_us, lease.until)
            return None
        ledger.not_booked(ref, "not in Treazure's history: sending again", lease.until)
    if row.attempts >= s.POINTS_MAX_ATTEMPTS:
        ledger.fail(ref, f"gave up after {row.attempts} attempts: {row.reason}", lease.until)
        return None
    # Never send on an old lease: renewed just now, it is ours for a full lease, and the
    # keeper cuts the request short before the lease could run out unrenewed, so no
    # request of ours is still out when a second worker may take the row. The renewal
    # and the mark that the request may be booked are one statement.
    assert row.amount_cents is not None and row.description is not None
    lease.renew(ledger, sending=True)
    try:
        balance = await means.calls.book_points(
            row.contact_id, row.amount_cents, row.description, ref)
    except Ambiguous as exc:
        ledger.still_uncertain(ref, str(exc), lease.until)
        return _TryAgain(s.POINTS_SETTLE_SECONDS, str(exc), settling=True)
    except Retryable as exc:
        ledger.not_booked(ref, str(exc), lease.until)
        return _TryAgain(_pause(exc, row.attempts + 1), str(exc))
    except Rejected as exc:
        if exc.status == 401:  # our credentials, not the transaction: not booked
            ledger.not_booked(ref, str(exc), lease.until)
            return _TryAgain(_pause(exc, row.attempts + 1), str(exc))
        ledger.fail(ref, _refusal(exc), lease.until)
        return None
    # Booked. Treazure's own time for it orders it against the sync's balances.
    booking = await booking_time(parts, row, means)
    if booking is None:
        ledger.booked(ref, balance, None, lease.until)
    else:
        ledger.booked(ref, booking.balance_cents, booking.mutated_us, lease.until)
    log.info("transaction %s booked", ref)
    return None


def _pause(error: RemoteError, attempt: int) -> float:
    """Before sending again after an error that surely booked nothing."""
    return jittered(0.5, attempt, 30.0, retry_after=error.retry_after, retry_after_cap=60.0)


def _refusal(error: Rejected) -> str:
    if error.status == 422 and "InsufficientBalance" in error.reason:
        return ("insufficient balance: the redemption is larger than the contact's "
                "balance in Treazure (HTTP 422 InsufficientBalance); nothing was booked")
    if error.status == 404:
        return f"unknown contact: Treazure has no such account ({error.reason}); nothing booked"
    return f"refused by Treazure ({error.reason}); nothing was booked"
