"""Thin tasks: parse arguments, call a flow, return a small JSON-serialisable summary.

Each body imports its flow (lazy.py says why: the worker's main process only registers
these tasks)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from worker.base.point_request import SOURCES, validate_contact_id, validate_request
from worker.faces.celery.app import app
from worker.faces.celery.lazy import run_with_parts

if TYPE_CHECKING:
    from worker.flows.parts import Parts
    from worker.flows.points import batch, record
    from worker.store.ledger import LedgerRow


class SyncFailed(Exception):
    """The run was recorded as failed; the watermark did not move."""


@app.task(name="pointsync.sync_balances", bind=True)
def sync_balances(self: Any, since: str | None = None, until: str | None = None) -> dict[str, Any]:
    """One balance sync run; `since`/`until` (ISO times) override the window."""
    from worker.base.settings import get_settings
    from worker.faces.runtime import remote
    from worker.flows.sync.run import run_sync

    async def main() -> dict[str, Any]:
        async with remote() as r:
            summary = await run_sync(
                r.settings, r.store, r.redis, r.treazure, r.engage,
                since=since, until=until, task_id=self.request.id, guard=r.guard,
            )
        return summary.as_dict()

    result = asyncio.run(main())
    if result["status"] == "succeeded" and get_settings().HISTORY_AFTER_SYNC:
        refresh_history.apply_async(kwargs={"run_id": result["run_id"]},
                                    priority=HISTORY_PRIORITY)
    if result["status"] == "failed":
        # Shown as FAILURE in Flower and `celery result`; the run row keeps the details.
        raise SyncFailed(f"sync run {result['run_id']} failed: {result['error']}")
    return result


# Booking tasks leave pushing to one drain scheduled this long after the first booking
# that needs it: the rows booked meanwhile go to Engage in the same request.
PUSH_GATHER_SECONDS = 0.05


def call_reference(task: Any, prefix: str) -> str | None:
    """The reference of a call made without one: derived from the task id, which every
    delivery of the message keeps (a redelivery after a pool child or a worker died is the
    same call, and must find the row the first delivery recorded). Every task that acts
    (books points, issues a card, sends a customer-visible event) takes its default
    reference from here, never from a fresh uuid."""
    task_id = getattr(task.request, "id", None)
    return f"{prefix}-{task_id}" if task_id else None


@app.task(name="pointsync.add_points", bind=True, track_started=False)
def add_points(
    self: Any,
    contact_id: str,
    amount: str | int | float,
    description: str,
    reference: str | None = None,
    source: str = "task",
) -> dict[str, Any]:
    """Book points in Treazure once per `reference`, then set the new balance in Engage.

    Invalid arguments fail the task at once (nothing is recorded or sent). A transaction
    not finished here (Treazure down, say) stays in the ledger and the sweep finishes it.
    The result says `booked` when the Engage push is still to come (`pointsync points show`).
    """
    from worker.flows.points import booking, record
    request = validate_request(contact_id, amount, description, reference,
                               fallback_reference=call_reference(self, "pts"))
    origin = source if source in SOURCES else "task"

    async def work(parts: Parts) -> record.Outcome:
        outcome = await booking.add_points(parts, request, origin)
        await start_drain_if_booked(parts, outcome.state)
        return outcome

    outcome = run_with_parts(work)
    if outcome.retry_in is not None and outcome.retry_in <= record.REQUEUE_MAX_SECONDS:
        # The row is due again soon (a send settling, a short backoff): this same call
        # then, not a process waiting for it; should the message be lost, the sweep
        # finds the row due.
        add_points.apply_async(
            kwargs={"contact_id": contact_id, "amount": amount, "description": description,
                    "reference": request.reference, "source": source},
            countdown=outcome.retry_in, **NO_RESULT)
    return outcome.as_dict()


@app.task(name="pointsync.book_received", track_started=False, ignore_result=True)
def book_received() -> dict[str, Any]:
    """Book the received webhook rows that are due, many at once (queued by the web
    process, one turn at a time: see flows/points/batch.py), then start the drain."""
    from worker.flows.points import batch, drain, record

    async def work(parts: Parts) -> tuple[batch.BatchOutcome, bool, float | None]:
        outcome = await batch.book_received(parts)
        drain_again: float | None = None
        # The round's balances go to Engage from this task when it takes the push turn: a
        # queued drain would wait behind the rounds queued meanwhile.
        if outcome.settled and await drain.take_push_turn(parts.redis):
            until = time.monotonic() + ROUND_DRAIN_SECONDS
            _, drain_again = await drain_turn(parts, ROUND_DRAIN_SECONDS)
            # Rows another round booked meanwhile are due now and the turn is this task's
            # again: pushed from here too, not left to a drain queued behind the rounds.
            while drain_again == 0.0 and time.monotonic() < until:
                _, drain_again = await drain_turn(parts, until - time.monotonic())
        # More may wait: a round at once, unless a row recorded meanwhile queued one.
        return (outcome, outcome.full and await batch.take_book_turn(parts.redis),
                drain_again)

    outcome, again, drain_again = run_with_parts(work)
    if drain_again is not None:
        push_points.apply_async(countdown=max(drain_again, PUSH_GATHER_SECONDS))
    if again:
        book_received.apply_async()
    elif outcome.retry_in is not None and outcome.retry_in <= record.REQUEUE_MAX_SECONDS:
        # A row let go for a short pause: a round when it is due; should this message be
        # lost, the sweep finds the row due.
        book_received.apply_async(countdown=outcome.retry_in + REQUEUE_MARGIN_SECONDS)
    return outcome.as_dict()


# A round queued for a row's retry runs this much after it is due, never before.
REQUEUE_MARGIN_SECONDS = 0.05
# A round's own drain stops looking for more booked rows after this: rows booked meanwhile
# by another round are drained at that round's end (or by the drain queued for them).
ROUND_DRAIN_SECONDS = 1.0


# Sent at traffic's pace and read by nobody (the ledger and the history store hold the
# outcome): no result is stored for these, so Redis does not grow with the traffic.
NO_RESULT = {"ignore_result": True}


async def start_drain_if_booked(parts: Parts, points_state: str | None) -> None:
    """A booked transaction's balance goes to Engage with the next drain: the first task
    that needs one schedules it (the drain then takes every row booked by then)."""
    from worker.flows.points import drain
    if points_state == "booked" and await drain.take_push_turn(parts.redis):
        push_points.apply_async(countdown=PUSH_GATHER_SECONDS)


@app.task(name="pointsync.push_points", track_started=False, **NO_RESULT)
def push_points() -> dict[str, Any]:
    """Set the new balances of booked transactions in Engage, many per request."""

    applied, again_in = run_with_parts(drain_turn)
    if again_in is not None:
        push_points.apply_async(countdown=max(again_in, PUSH_GATHER_SECONDS))
    return {"applied": applied, "next_in_seconds": again_in}


async def drain_turn(parts: Parts, budget_seconds: float = 30.0) -> tuple[int, float | None]:
    """A drain by the holder of the push turn: push, end the turn, then take it again if
    booked rows remain; (rows applied, seconds until the next drain is due, or None when
    nothing waits or a booking took the turn)."""
    from worker.flows.points import drain
    applied = await drain.drain(parts, budget_seconds)
    await drain.end_push_turn(parts.redis)
    wait = drain.seconds_until_due(parts.store)
    if wait is not None and not await drain.take_push_turn(parts.redis):
        wait = None  # a booking scheduled the next drain already
    return applied, wait


@app.task(name="pointsync.sweep_points", **NO_RESULT)
def sweep_points() -> dict[str, int]:
    """Finish transactions whose task was lost, and push balances still waiting for Engage."""
    from worker.flows.points import sweep
    return run_with_parts(lambda parts: sweep.sweep(parts, enqueue_row))


def enqueue_row(row: LedgerRow) -> None:
    """Queue a recorded row again; nobody waits on this message, so it keeps no result."""
    from worker.flows.points import record
    add_points.apply_async(kwargs=record.booking_arguments(row), **NO_RESULT)


# The lowest priority (see celery.py): history never holds up a sync or a transaction.
HISTORY_PRIORITY = 9


@app.task(name="pointsync.fetch_history", track_started=False)
def fetch_history(contact_id: str) -> dict[str, Any]:
    """Fetch and store one contact's points history (incrementally once some is stored)."""
    from worker.flows import history
    validate_contact_id(contact_id)

    async def work(parts: Parts) -> dict[str, Any]:
        try:
            return {**await history.fetch_history(parts, contact_id), "found": True}
        except history.UnknownContact:
            return {"contact_id": contact_id, "found": False}

    return run_with_parts(work)


@app.task(name="pointsync.fetch_history_batch", track_started=False, **NO_RESULT)
def fetch_history_batch(contact_ids: list[str]) -> dict[str, int]:
    """One chunk of a refresh: many contacts, a bounded number of requests at once, for
    about HISTORY_CHUNK_SECONDS; what is left goes back in the queue as a new chunk."""
    from worker.flows import history

    async def work(parts: Parts) -> tuple[dict[str, int], list[str]]:
        s = parts.settings
        return await history.fetch_for_a_while(
            parts, contact_ids, s.HISTORY_FETCH_CONCURRENCY, s.HISTORY_CHUNK_SECONDS)

    counts, rest = run_with_parts(work)
    if rest:
        fetch_history_batch.apply_async(kwargs={"contact_ids": rest}, priority=HISTORY_PRIORITY)
    return {**counts, "requeued": len(rest)}


@app.task(name="pointsync.refresh_history", **NO_RESULT)
def refresh_history(run_id: int) -> dict[str, int]:
    """After a sync run: refresh the history of every contact it read, in chunk tasks."""
    from worker.base.settings import get_settings
    from worker.faces.runtime import get_store
    settings = get_settings()
    store = get_store(settings)
    chunks = contacts = 0
    after = ""
    while batch := store.contacts_seen_in_run(run_id, after, settings.HISTORY_CHUNK_SIZE):
        fetch_history_batch.apply_async(kwargs={"contact_ids": batch},
                                        priority=HISTORY_PRIORITY)
        chunks, contacts, after = chunks + 1, contacts + len(batch), batch[-1]
    return {"run_id": run_id, "contacts": contacts, "chunks": chunks}


@app.task(name="pointsync.purge_history")
def purge_history() -> dict[str, int]:
    """Apply HISTORY_RETENTION_DAYS."""
    from worker.base.settings import get_settings
    from worker.faces.runtime import get_store
    from worker.flows import history
    settings = get_settings()
    return {"removed": history.purge(get_store(settings), settings)}
