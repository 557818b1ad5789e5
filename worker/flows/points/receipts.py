"""A booking as Treazure's history shows it, found by its receiptNr (our reference)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from worker.base.http import RemoteError
from worker.base.money import from_utc_micros, utc_micros
from worker.base.settings import Settings
from worker.flows.parts import Parts
from worker.store.history import HistoryStore, MalformedHistory
from worker.store.ledger import LedgerRow
from worker.systems.treazure.client import PointCalls
from worker.systems.treazure.history import Booking, receipt_in

log = logging.getLogger("pointsync.points")


async def booking_time(parts: Parts, row: LedgerRow, calls: PointCalls | None = None
                       ) -> Booking | None:
    """The booking as Treazure's history shows it; None while the history is unreadable.
    `calls`: where the history is read (the client's httpx unless given)."""
    try:
        return await read_booking(parts, row, calls)
    except RemoteError as exc:
        log.warning("transaction %s booked; its history entry is not readable yet: %s",
                    row.reference, exc)
        return None


async def read_booking(parts: Parts, row: LedgerRow, calls: PointCalls | None = None
                       ) -> Booking | None:
    """Read the contact's history for the row's receiptNr, and keep what was read.

    The read starts where the stored history ends (or covers it all when none is
    stored), never later than the first send less the clock-skew margin, so the slice
    joins the stored one: the booking refreshes the contact's history at no extra cost.
    """
    first_sent = _history_from(parts.settings, row)
    stored = HistoryStore(parts.store)
    known = stored.fetched(row.contact_id)
    since: datetime | None = first_sent
    if known is None or known.newest_at_us is None:
        since = None
    elif known.newest_at_us < utc_micros(first_sent):
        since = from_utc_micros(known.newest_at_us)
    entries = await (calls or parts.treazure).history(row.contact_id, since)
    try:
        stored.save(row.contact_id, entries)
    except MalformedHistory as exc:  # the booking still counts; the history waits
        log.warning("history of %s not stored: %s", row.contact_id, exc)
    return receipt_in(entries, row.reference)


def _history_from(settings: Settings, row: LedgerRow) -> datetime:
    sent = row.first_sent_at or row.created_at
    return sent - timedelta(seconds=settings.POINTS_HISTORY_MARGIN_SECONDS)
