"""The gift-card sweep: finishes orders and redemptions whose task was lost (worker killed,
message lost) or whose retry is due, from the step each one recorded."""

from __future__ import annotations

import logging

from worker.flows.giftcards.issue import process_order
from worker.flows.giftcards.redeem import resume_redemption
from worker.flows.parts import Parts
from worker.store.giftcards import ORDER_OPEN, REDEMPTION_OPEN, Orders, Redemptions

log = logging.getLogger("pointsync.giftcards")

BATCH = 100  # per state and sweep: the next sweep takes the rest


async def sweep_giftcards(parts: Parts) -> dict[str, int]:
    """Move on every lost or due order and redemption; counts of each finished."""
    if parts.toggle is None:
        return {"orders": 0, "redemptions": 0}
    stale = parts.settings.POINTS_STALE_SECONDS
    counts = {"orders": 0, "redemptions": 0}
    # Redemptions first: one waiting for its card moves its order on itself.
    redemptions = Redemptions(parts.store).outbox
    for state in REDEMPTION_OPEN:
        for row in redemptions.lost(state, stale, BATCH):
            try:
                done = await resume_redemption(parts, row.reference)
            except Exception as exc:  # one row's trouble does not stop the sweep
                log.warning("sweep: redemption %s: %s", row.reference, exc)
                continue
            counts["redemptions"] += done.state != row.state
    orders = Orders(parts.store).outbox
    for state in ORDER_OPEN:
        for order in orders.lost(state, stale, BATCH):
            try:
                card = await process_order(parts, order.reference)
            except Exception as exc:
                log.warning("sweep: gift card %s: %s", order.reference, exc)
                continue
            counts["orders"] += card.state != order.state
    if any(counts.values()):
        log.info("gift-card sweep: %(orders)d order(s), %(redemptions)d redemption(s) "
                 "moved on", counts)
    return counts
