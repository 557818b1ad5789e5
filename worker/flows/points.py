"""Flow 2: point transactions, booked in Treazure exactly once, then set in Engage.

A request is first recorded in the ledger (the database is the truth); then a worker that
holds the row's lease books it:

- before a send, the row is marked `uncertain` and committed, so a worker killed while the
  request is out leaves a row that the next attempt resolves first;
- an uncertain row is resolved by reading the account's history for its receiptNr: found
  means booked, not found means it may be sent again;
- 429 and connect errors are surely not booked: retried with backoff; a read timeout, a
  dropped connection or a 5xx may be booked: uncertain, resolved after a short pause
  (POINTS_SETTLE_SECONDS) that no process waits out: the row is let go, due again after
  the pause, and the task queued again for then (see `Outcome.retry_in`);
- a 4xx ends the row `failed` with Treazure's reason (422: insufficient balance).

The new balance reaches Engage through `drain`, scheduled once for many bookings: one
process at a time pushes every booked row, many contacts per request (Engage allows 50
requests/s for everything), under the same per-contact claims and the same guard as the
balance sync (see pushguard), so neither flow overwrites the other's newer balance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from worker.base.arguments import InvalidArgument
from worker.base.http import Ambiguous, Rejected, RemoteError, Retryable
from worker.base.locks import held_lock
from worker.base.logs import bind_log_context
from worker.base.money import cents_to_decimal, from_utc_micros, utc_micros
from worker.base.point_request import PointRequest
from worker.base.settings import Settings
from worker.flows.parts import Parts
from worker.store.database import Store, utcnow
from worker.store.history import HistoryStore, MalformedHistory
from worker.store.ledger import LeaseLost, Ledger, LedgerRow
from worker.systems.engage.client import Balance
from worker.systems.treazure.client import Booking, receipt_in

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
# A row left for later is due again after this, doubling with each booking attempt made
# (up to POINTS_RETRY_MAX_SECONDS); with the default 10 attempts, Treazure may be away for
# about six minutes before a transaction ends failed.
RETRY_BASE_SECONDS = 1.0
# A task queues itself again for a pause up to this long (far below the broker's visibility
# timeout, so the delayed message is never handed out twice); a longer one is the sweep's.
REQUEUE_MAX_SECONDS = 60.0


@dataclass
class Outcome:
    reference: str
    state: str
    contact_id: str
    amount: str | None
    balance: str | None
    reason: str | None
    attempts: int
    duplicate: bool = False
    in_progress: bool = False
    # Seconds until the row, let go unfinished by this call, is due again (None: finished,
    # or not ours); the task queues itself for then when that is soon (REQUEUE_MAX_SECONDS).
    retry_in: float | None = None

    @classmethod
    def of(cls, row: LedgerRow, *, retry_in: float | None = None, **flags: bool) -> Outcome:
        return cls(
            reference=row.reference, state=row.state, contact_id=row.contact_id,
            amount=decimal_text(row.amount_cents), balance=decimal_text(row.balance_cents),
            reason=row.reason, attempts=row.attempts, retry_in=retry_in, **flags,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def record(
    store: Store, request: PointRequest, source: str, *, expect_new: bool = False
) -> tuple[LedgerRow, bool]:
    """The ledger row for the request (created, or the one its reference already has).

    `expect_new` (the webhook's case) tries the insert first; otherwise (a task, usually
    for a row the web process recorded) a read comes first.
    """
    ledger = Ledger(store)
    known = None if expect_new else ledger.get(request.reference)
    row, created = (known, False) if known is not None else ledger.record(request, source)
    if not created and not row.same_request(request):
        raise InvalidArgument(
            f"reference: {request.reference!r} is already used for a different transaction "
            f"(contact {row.contact_id}, amount {decimal_text(row.amount_cents)})")
    return row, created


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
    assert row.lease_until is not None
    lease = Lease(reference, row.lease_until, parts.settings.POINTS_LEASE_SECONDS)
    retry_in: float | None = None
    settled = False  # booked or failed: those moves let go of the lease themselves
    released = False
    try:
        if row.state == "received":
            try:
                async with lease.kept(ledger):
                    retry_in = await _book(parts, ledger, row, lease)
                    settled = retry_in is None
            except TimeoutError:  # the lease could not be kept: the work was cut short
                retry_in = 0.0
    finally:
        if not settled:
            with contextlib.suppress(LeaseLost):
                ledger.release(reference, retry_in, lease.until)
                released = True
    # A booked row's balance goes to Engage with the next drain (see take_push_turn).
    return Outcome.of(ledger.get(reference),  # type: ignore[arg-type]
                      retry_in=retry_in if released else None)


# -- the lease ---------------------------------------------------------------------------------


class Lease:
    """A worker's hold on one ledger row: short, and renewed while the work runs.

    A dead worker's row is free again one lease after its last renewal (not after the
    longest a booking could take). Every ledger move gives `until`, the row's lease_until
    as last renewed; the keeper (see `kept`) renews it every third of the lease and cuts
    the work short before the lease could run out unrenewed, so no request of ours is
    still out when a second worker may take the row.
    """

    def __init__(self, reference: str, until: datetime, seconds: float) -> None:
        self.reference, self.until, self.seconds = reference, until, seconds
        self._deadline: asyncio.Timeout | None = None  # set while `kept` guards the work

    def renew(self, ledger: Ledger) -> None:
        """Extend the lease to a full one from now (and the work's deadline), or LeaseLost
        (and the guarded work is cancelled at once)."""
        try:
            self.until = ledger.renew(self.reference, self.until, self.seconds)
        except LeaseLost:
            self._cut(at_once=True)
            raise
        self._cut(at_once=False)

    @contextlib.asynccontextmanager
    async def kept(self, ledger: Ledger) -> AsyncIterator[None]:
        """Keep the lease while the block runs; the block is cancelled (TimeoutError) a
        margin before the lease would run out unrenewed, or at once when it is lost."""
        async with asyncio.timeout(None) as deadline:
            self._deadline = deadline
            self._cut(at_once=False)
            keeper = asyncio.ensure_future(self._keep(ledger))
            try:
                yield
            finally:
                self._deadline = None
                keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keeper

    async def _keep(self, ledger: Ledger) -> None:
        while True:
            await asyncio.sleep(self.seconds / 3)
            try:
                self.renew(ledger)
            except LeaseLost:
                log.warning("transaction %s: lease lost to another worker; stopping",
                            self.reference)
                return
            except Exception as exc:  # the database, for a moment: the deadline stands
                log.warning("transaction %s: lease not renewed (%s)", self.reference, exc)

    def _cut(self, *, at_once: bool) -> None:
        """Move the guarded work's deadline: now, or a margin before the lease runs out
        (the margin leaves the cancelled work time to let go before anyone may claim)."""
        if self._deadline is None:
            return
        now = asyncio.get_running_loop().time()
        left = (self.until - utcnow()).total_seconds() - min(2.0, self.seconds / 6)
        self._deadline.reschedule(now if at_once else now + left)


# -- booking in Treazure ---------------------------------------------------------------------


@dataclass(frozen=True)
class _TryAgain:
    after: float
    reason: str
    # The pause is for Treazure to settle a send that may have been booked: nothing to do
    # meanwhile, so the row is let go for it instead of this process waiting it out.
    settling: bool = False


async def _book(parts: Parts, ledger: Ledger, row: LedgerRow, lease: Lease) -> float | None:
    """Try to book a few times here; returns when the row should be tried again (None: the
    row is booked or failed)."""
    s = parts.settings
    for attempt in range(1, s.POINTS_INLINE_ATTEMPTS + 1):
        outcome = await _book_once(parts, ledger, row, lease)
        if outcome is None:
            return None
        row = ledger.get(row.reference)  # type: ignore[assignment]
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
    return min(settings.POINTS_RETRY_MAX_SECONDS,
               RETRY_BASE_SECONDS * 2 ** min(max(attempts - 1, 0), 16))


async def _book_once(
    parts: Parts, ledger: Ledger, row: LedgerRow, lease: Lease
) -> _TryAgain | None:
    s, treazure, ref = parts.settings, parts.treazure, row.reference
    if row.uncertain:
        # The last request may have been booked: its receiptNr in the history decides.
        # The pause was let go for (see `_book`); a row taken early (a redelivery, say)
        # waits out the rest here: queueing it again would move updated_at, and the pause.
        settle = s.POINTS_SETTLE_SECONDS - (utcnow() - row.updated_at).total_seconds()
        if settle > 0:
            await asyncio.sleep(settle)
        try:
            found = await _read_booking(parts, row)
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
    # request of ours is still out when a second worker may take the row.
    lease.renew(ledger)
    assert row.amount_cents is not None and row.description is not None
    ledger.sending(ref, lease.until)
    try:
        balance = await treazure.book_points(
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
    booking = await _booking_time(parts, row)
    if booking is None:
        ledger.booked(ref, balance, None, lease.until)
    else:
        ledger.booked(ref, booking.balance_cents, booking.mutated_us, lease.until)
    log.info("transaction %s booked", ref)
    return None


async def _booking_time(parts: Parts, row: LedgerRow) -> Booking | None:
    """The booking as Treazure's history shows it; None while the history is unreadable."""
    try:
        return await _read_booking(parts, row)
    except RemoteError as exc:
        log.warning("transaction %s booked; its history entry is not readable yet: %s",
                    row.reference, exc)
        return None


async def _read_booking(parts: Parts, row: LedgerRow) -> Booking | None:
    """Read the contact's history for the row's receiptNr, and keep what was read.

    The read starts where the stored history ends (or covers it all when none is
    stored), never later than the first send less the clock-skew margin, so the slice
    joins the stored one: the booking refreshes the contact's history at no extra cost.
    """
    since: datetime | None = _history_from(parts.settings, row)
    stored = HistoryStore(parts.store)
    known = stored.fetched(row.contact_id)
    if known is None or known.newest_at_us is None:
        since = None
    elif known.newest_at_us < utc_micros(since):  # type: ignore[arg-type]
        since = from_utc_micros(known.newest_at_us)
    entries = await parts.treazure.history(row.contact_id, since)
    try:
        stored.save(row.contact_id, entries)
    except MalformedHistory as exc:  # the booking still counts; the history waits
        log.warning("history of %s not stored: %s", row.contact_id, exc)
    return receipt_in(entries, row.reference)


def _history_from(settings: Settings, row: LedgerRow) -> datetime:
    sent = row.first_sent_at or row.created_at
    return sent - timedelta(seconds=settings.POINTS_HISTORY_MARGIN_SECONDS)


def _pause(error: RemoteError, attempt: int) -> float:
    if error.retry_after is not None:
        return min(error.retry_after, 60.0)
    ceiling = min(30.0, 0.5 * 2 ** attempt)
    return random.uniform(ceiling / 2, ceiling)


def _refusal(error: Rejected) -> str:
    if error.status == 422 and "InsufficientBalance" in error.reason:
        return ("insufficient balance: the redemption is larger than the contact's "
                "balance in Treazure (HTTP 422 InsufficientBalance); nothing was booked")
    if error.status == 404:
        return f"unknown contact: Treazure has no such account ({error.reason}); nothing booked"
    return f"refused by Treazure ({error.reason}); nothing was booked"


# -- applying in Engage --------------------------------------------------------------------


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
            [(r.contact_id, r.balance_mutated_us) for r in pushed])  # type: ignore[misc]
    return len(_refs(pushed, covered)) + len(_refs(superseded, covered))


def _newer(row: LedgerRow, state: Any) -> bool:
    if row.balance_mutated_us > state.sent_mutated_us:
        return True
    return row.balance_mutated_us == state.sent_mutated_us and \
        row.balance_cents != state.sent_cents


async def _push(
    parts: Parts, ledger: Ledger, rows: list[LedgerRow], covered: dict[str, list[str]]
) -> list[LedgerRow]:
    """Push the rows' balances; returns those Engage accepted (recorded as applied)."""
    if not rows:
        return []
    balances = [
        Balance(r.contact_id, cents_to_decimal(r.balance_cents),  # type: ignore[arg-type]
                from_utc_micros(r.balance_mutated_us))  # type: ignore[arg-type]
        for r in rows
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
        (r.contact_id, r.balance_cents, r.balance_mutated_us)  # type: ignore[misc]
        for r in accepted])
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
        booking = await _booking_time(parts, row)
        if booking is None:
            ledger.defer([row.reference], ENGAGE_RETRY_SECONDS,
                         "booked; waiting for Treazure's history to show when")
            continue
        ledger.set_booking_time(row.reference, booking.balance_cents, booking.mutated_us)
        complete.append(ledger.get(row.reference))  # type: ignore[arg-type]
    return complete


def _order(row: LedgerRow) -> tuple[int, datetime]:
    return (row.balance_mutated_us or 0, row.booked_at or row.created_at)


def _refs(rows: Sequence[LedgerRow], covered: dict[str, list[str]]) -> list[str]:
    return [ref for row in rows for ref in covered[row.contact_id]]


def decimal_text(cents: int | None) -> str | None:
    return None if cents is None else str(cents_to_decimal(cents))


# -- the sweep ---------------------------------------------------------------------------------


async def sweep(parts: Parts, enqueue: Callable[[LedgerRow], None]) -> dict[str, int]:
    """Finish what was lost: re-send received rows whose task is gone (worker killed,
    broker restarted, enqueue failed) and push booked rows that still wait for Engage."""
    ledger = Ledger(parts.store)
    s = parts.settings
    await parts.guard.prune()
    lost = ledger.lost_received(s.POINTS_STALE_SECONDS)
    sent = 0
    for row in lost:
        try:
            enqueue(row)
        except Exception as exc:  # the broker is down: the next sweep tries again
            log.warning("sweep could not enqueue transaction %s: %s", row.reference, exc)
            break
        sent += 1
    # Not sent again by the next sweep while this message is on its way.
    ledger.defer([r.reference for r in lost[:sent]], s.POINTS_STALE_SECONDS)
    applied = await drain(parts)
    if sent or applied:
        log.info("sweep: %d transaction(s) sent again, %d applied in Engage", sent, applied)
    return {"requeued": sent, "applied": applied}
