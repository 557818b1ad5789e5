"""Deliver one subject's events, once each, in the order the source created them.

A subject (a Toggle card or order, a Nector customer) is worked on by one worker at a time:
only its head — the earliest open delivery by the source's `created_at`, then event id —
may be sent, under the outbox lease on that row. The lease is short and renewed while the
send runs (worker/flows/lease.py, as the points ledger's): a dead worker's delivery is
taken up again within a lease, and a send that could outlive its lease unrenewed is cut
short first, so two sends of one event are never out together. A later event waits while
an earlier one is open (retrying); one that failed for good is set aside (visible,
replayable) and the subject goes on. Subjects are independent: a slow one never holds up another.

Each attempt: screen (filtered, or failed without a call), mark the row uncertain, send
once, settle. Transient failures (Retryable: 5xx, 429 with Retry-After, connection errors)
and lost answers (Ambiguous, counted on the row) are retried with growing backoff until
`max_age_seconds` after the event was received, then failed; a refusal (Rejected) fails at
once with the destination's reason. A worker that died mid-send leaves the row uncertain:
its next send is counted as ambiguous too. Nothing else is ever sent twice.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from worker.base.backoff import jittered
from worker.base.http import Ambiguous, RemoteError, Retryable
from worker.flows.lease import Lease
from worker.flows.relays.destinations import Destination
from worker.store.engine import utcnow
from worker.store.outbox import FAILED, LeaseLost
from worker.store.relays import DELIVERED, FILTERED, RECEIVED, DeliveryRow, Relays

log = logging.getLogger("pointsync.relays")

LEASE_SECONDS = 20.0
FIRST_RETRY_SECONDS = 2.0
RETRY_CAP_SECONDS = 3600.0
# Deliveries one call works through before handing the subject back (its task requeues).
SUBJECT_BATCH = 100


@dataclass
class SubjectRun:
    """What one pass over a subject did: each delivery's end, and what is left."""

    source: str
    subject: str
    settled: list[tuple[str, str]] = field(default_factory=list)  # (key, state)
    retry_at: datetime | None = None  # the head waits until then
    busy: bool = False  # another worker holds the head
    more: bool = False  # the batch ran out with deliveries left

    def retry_in(self) -> float | None:
        if self.retry_at is None:
            return None
        return max(0.0, (self.retry_at - utcnow()).total_seconds())


async def deliver_subject(
    relays: Relays, destinations: Mapping[str, Destination], source: str, subject: str,
    *, max_age_seconds: float, lease_seconds: float = LEASE_SECONDS,
    batch: int = SUBJECT_BATCH,
) -> SubjectRun:
    run = SubjectRun(source, subject)
    for _ in range(batch):
        head = relays.head(source, subject)
        if head is None:
            return run
        if head.next_attempt_at is not None and head.next_attempt_at > utcnow():
            run.retry_at = head.next_attempt_at
            return run
        claimed = relays.outbox.claim(head.key, lease_seconds)
        if claimed is None:
            run.busy = True
            return run
        assert claimed.lease_until is not None
        now_head = relays.head(source, subject)
        if now_head is not None and now_head.key != claimed.key:
            # An earlier event arrived meanwhile: it goes first.
            relays.outbox.release(claimed.key, None, claimed.lease_until)
            continue
        lease = Lease(claimed.key, claimed.lease_until, lease_seconds)
        try:
            async with lease.kept(relays.outbox):
                state, retry_at = await _deliver_one(
                    relays, destinations, claimed, lease, max_age_seconds)
        except LeaseLost as exc:
            log.warning("relay %s: %s", claimed.key, exc)
            run.busy = True
            return run
        except TimeoutError:  # cut short: the lease could not be renewed (see Lease.kept)
            log.warning("relay %s: send cut short, its lease could not be renewed; "
                        "the sweep takes it up once the lease has run out", claimed.key)
            run.busy = True
            return run
        run.settled.append((claimed.key, state))
        if state == RECEIVED:
            run.retry_at = retry_at
            return run
    run.more = relays.head(source, subject) is not None
    return run


async def _deliver_one(
    relays: Relays, destinations: Mapping[str, Destination], row: DeliveryRow,
    held: Lease, max_age_seconds: float,
) -> tuple[str, datetime | None]:
    """Settle one claimed delivery: (its state now, when it is next due if still open).
    Every move gives the lease as last renewed (`held.until`)."""
    destination = destinations.get(row.destination)
    if destination is None:
        return _retry(relays, row, held.until, f"{row.destination}: not configured here",
                      None, max_age_seconds)
    event = relays.event(row.source, row.event_id)
    if event is None:  # recorded with its event in one transaction: cannot happen
        relays.fail(row.key, "the event's record is missing", held.until)
        return FAILED, None
    if row.uncertain:  # a worker died mid-send: that answer is lost, this is a resend
        relays.lost_answer(row.key, held.until)
    screened = destination.screen(event)
    if screened is not None:
        if screened.state == FILTERED:
            relays.finish(row.key, held.until, FILTERED, screened.reason)
        else:
            relays.fail(row.key, screened.reason, held.until)
        log.info("relay %s: %s (%s)", row.key, screened.state, screened.reason)
        return screened.state, None
    held.renew(relays.outbox, sending=True)
    try:
        await destination.send(event)
    except Ambiguous as exc:
        relays.lost_answer(row.key, held.until)
        return _retry(relays, row, held.until, f"answer lost: {exc.reason}", exc.retry_after,
                      max_age_seconds)
    except Retryable as exc:
        return _retry(relays, row, held.until, exc.reason, exc.retry_after, max_age_seconds)
    except RemoteError as exc:  # Rejected: the destination will answer the same again
        relays.fail(row.key, exc.reason, held.until)
        log.warning("relay %s: refused by %s: %s", row.key, row.destination, exc.reason)
        return FAILED, None
    except Exception as exc:  # anything else, unforeseen: it may have been sent
        log.exception("relay %s: unexpected error", row.key)
        return _retry(relays, row, held.until, f"{type(exc).__name__}: {exc}"[:300], None,
                      max_age_seconds, uncertain=True)
    relays.finish(row.key, held.until, DELIVERED)
    return DELIVERED, None


def _retry(
    relays: Relays, row: DeliveryRow, lease: datetime, reason: str,
    retry_after: float | None, max_age_seconds: float, *, uncertain: bool = False,
) -> tuple[str, datetime | None]:
    """Plan the next attempt with backoff, or fail once `max_age_seconds` have passed
    since the event was received. `uncertain`: whether that send may have gone out is not
    known, so the next one is counted ambiguous."""
    now = utcnow()
    left = max_age_seconds - (now - row.created_at).total_seconds()
    if left <= 0:
        relays.fail(row.key, f"{reason} (still failing {max_age_seconds:g} s after it was "
                             "received: given up)", lease)
        log.warning("relay %s: given up: %s", row.key, reason)
        return FAILED, None
    pause = jittered(FIRST_RETRY_SECONDS, row.attempts, RETRY_CAP_SECONDS,
                     retry_after=retry_after)
    retry_at = now + timedelta(seconds=min(pause, left))
    relays.outbox.move(row.key, lease, reason=reason[:2000], uncertain=uncertain,
                       lease_until=None, next_attempt_at=retry_at)
    log.info("relay %s: %s; next attempt in %.1f s", row.key, reason, min(pause, left))
    return RECEIVED, retry_at
