"""The sweep: finishes what was lost on the way."""

from __future__ import annotations

import logging
from collections.abc import Callable

from worker.flows.parts import Parts
from worker.flows.points.drain import drain
from worker.store.ledger import Ledger, LedgerRow

log = logging.getLogger("pointsync.points")


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
