"""Booking the rows the webhook recorded, many in one task: one Celery task per
transaction cost about as much CPU as the booking itself.

The web process records a row, then makes sure one "book received rows" task is queued:
the first row to find no turn mark takes it (a Redis SET NX) and queues the task; rows
recorded while that task waits in the queue ride along. The task ends the turn before it
looks at the ledger, so a row recorded after that look takes a new turn and queues the
next task itself. It takes the lease of every due received row at once (one conditional
UPDATE: two workers never hold one row) and books them concurrently on one event loop,
each exactly as a single booking is (lease kept, uncertain before a send, the history
before any resend; see booking.py). Their balances go to Engage with the drain.

Should a task's message be lost, the mark expires and the next row queues another; the
sweep stays the last resort for the rows of a turn nobody took.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from worker.base.logs import bind_log_context
from worker.flows.parts import Parts
from worker.flows.points.booking import work_claimed
from worker.flows.points.histories import Means, StoredByRound
from worker.store.ledger import Ledger, LedgerRow

log = logging.getLogger("pointsync.points")

BOOK_TURN = "pointsync:points:book_turn"
# Longer than a queued task waits behind busy workers under load; should its message be
# lost, the next row recorded after this takes a new turn.
BOOK_TURN_TTL_MS = 10_000
# Rows taken by one round, all in flight at once (their leases run from the claim): as
# many as the Treazure client keeps connections.
BATCH_LIMIT = 32
WEBHOOK_SOURCE = "webhook"


@dataclass(frozen=True)
class BatchOutcome:
    taken: int  # rows this round held
    settled: int  # of them booked or failed (their lease let go)
    # Seconds until the soonest row let go unfinished is due again (None: none was).
    retry_in: float | None
    full: bool = False  # the round took as many rows as it may: more may be waiting

    def as_dict(self) -> dict[str, Any]:
        return {"taken": self.taken, "settled": self.settled, "retry_in": self.retry_in}


async def take_book_turn(redis: Any) -> bool:
    """Whether the caller should queue a round now: true for one caller until a round
    starts (the web process takes it the same way for each recorded row)."""
    return bool(await redis.set(BOOK_TURN, "1", nx=True, px=BOOK_TURN_TTL_MS))


async def end_book_turn(redis: Any) -> None:
    """Called before the ledger is read: a row recorded later takes a new turn."""
    try:
        await redis.delete(BOOK_TURN)
    except Exception as exc:  # Redis away: the mark expires; the rows are booked below
        log.warning("could not end the booking turn (%s); it expires by itself", exc)


async def book_received(parts: Parts, limit: int = BATCH_LIMIT) -> BatchOutcome:
    """Book every received webhook row that is due now (up to `limit`), concurrently."""
    await end_book_turn(parts.redis)
    ledger = Ledger(parts.store)
    rows = ledger.claim_due(WEBHOOK_SOURCE, parts.settings.POINTS_LEASE_SECONDS, limit)
    if not rows:
        return BatchOutcome(0, 0, None)
    # The round's requests go on the client's aiohttp session (kept between rounds); the
    # histories it reads are stored together when its bookings are done.
    histories = StoredByRound(parts.store, (row.contact_id for row in rows))
    means = Means(parts.treazure.round_calls(), histories)
    try:
        results = await asyncio.gather(*(_one(parts, ledger, row, means) for row in rows),
                                       return_exceptions=True)
    finally:
        histories.save()
    retries: list[float] = []
    settled = 0
    for row, result in zip(rows, results, strict=True):
        if isinstance(result, BaseException):
            # Its lease runs out and the sweep (or a later round) takes the row again.
            log.error("transaction %s: booking stopped by %r", row.reference, result)
        elif result is None:
            settled += 1
        else:
            retries.append(result)
    return BatchOutcome(len(rows), settled, min(retries) if retries else None,
                        full=len(rows) >= limit)


async def _one(parts: Parts, ledger: Ledger, row: LedgerRow, means: Means) -> float | None:
    bind_log_context(reference=row.reference)  # this booking's own context (a task's copy)
    return await work_claimed(parts, ledger, row, means)
