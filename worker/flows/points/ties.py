"""Two balances of one contact at the same Treazure time.

Treazure's times carry milliseconds, so two bookings of one contact within a millisecond
share a `mutatedAt`. Their balances then do not say which is the later one, and neither does
the order in which we booked them. Treazure's history lists movements oldest first, so the
balance after the last entry at that time is the balance as of it.
"""

from __future__ import annotations

import logging

from worker.base.http import RemoteError
from worker.base.money import from_utc_micros
from worker.flows.parts import Parts
from worker.systems.treazure.history import entry_booking

log = logging.getLogger("pointsync.points")


async def balance_at(parts: Parts, contact_id: str, mutated_us: int) -> int | None:
    """The contact's balance in cents after its last movement at `mutated_us`; None while
    the history cannot say (unreadable, or not showing that time yet)."""
    try:
        entries = await parts.treazure.history(contact_id, from_utc_micros(mutated_us))
    except RemoteError as exc:
        log.warning("two balances of %s at one time; its history is not readable: %s",
                    contact_id, exc)
        return None
    last: int | None = None
    for entry in entries:  # oldest first: the last one at that time wins
        try:
            booking = entry_booking(entry)
        except (KeyError, TypeError, ValueError):
            log.warning("history entry of %s is malformed; skipped", contact_id)
            continue
        if booking.mutated_us == mutated_us:
            last = booking.balance_cents
    return last
