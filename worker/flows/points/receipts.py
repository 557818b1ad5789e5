"""A booking as Treazure's history shows it, found by its receiptNr (our reference)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from worker.base.http import RemoteError
from worker.base.money import from_utc_micros, utc_micros
from worker.base.settings import Settings
from worker.flows.parts import Parts
from worker.flows.points.histories import Means
from worker.store.history import MalformedHistory
from worker.store.ledger import LedgerRow
from worker.systems.treazure.history import Booking, receipt_in

log = logging.getLogger("pointsync.points")


async def booking_time(parts: Parts, row: LedgerRow, means: Means | None = None
                       ) -> Booking | None:
    """The booking as Treazure's history shows it; None while the history is unreadable.
    `means`: where the history is read and kept (a single booking's unless given)."""
    try:
        return await read_booking(parts, row, means)
    except RemoteError as exc:
        log.warning("transaction %s booked; its history entry is not readable yet: %s",
                    row.reference, exc)
        return None


async def read_booking(parts: Parts, row: LedgerRow, means: Means | None = None
                       ) -> Booking | None:
    """Read the contact's history for the row's receiptNr, and keep what was read.

    The read starts where the stored history ends (or covers it all when none is
    stored), never later than the first send less the clock-skew margin, so the slice
    joins the stored one: the booking refreshes the contact's history at no extra cost.
    """
    means = means or Means.single(parts)
    first_sent = _history_from(parts.settings, row)
    newest = means.histories.newest(row.contact_id)
    since: datetime | None = first_sent
    if newest is None:
        since = None
    elif newest < utc_micros(first_sent):
        since = from_utc_micros(newest)
    entries = await means.calls.history(row.contact_id, since)
    try:
        means.histories.keep(row.contact_id, entries)
    except MalformedHistory as exc:  # the booking still counts; the history waits
        log.warning("history of %s not stored: %s", row.contact_id, exc)
    return receipt_in(entries, row.reference)


def _history_from(settings: Settings, row: LedgerRow) -> datetime:
    sent = row.first_sent_at or row.created_at
    return sent - timedelta(seconds=settings.POINTS_HISTORY_MARGIN_SECONDS)
