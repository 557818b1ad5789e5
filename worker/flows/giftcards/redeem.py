"""Points → gift card: a saga over two systems, each step recorded before it is taken.

    points_pending → points_taken → card_pending → card_issued → done
                                         └→ refund_pending → refunded
    (or failed, with the reason, when the points cannot be taken: nothing was issued)

1. The points are taken through the points ledger under `{reference}-points`: the ledger
   books them in Treazure exactly once, whatever is repeated here.
2. With the points booked, the card is issued through issue.py's order machinery under
   the caller's reference (Toggle's merchant_transaction_reference): one order per
   reference.
3. The new balance reaches Engage through the points ledger's own drain (the row goes
   booked → applied); `card_issued` waits for that and ends `done`, pushing nothing itself.
4. A card Toggle refuses for good gives the points back once, under `{reference}-refund`,
   and the saga ends `refunded` with Toggle's reason.

A worker killed between any two steps leaves the row at the step reached; the same entry
point (`resume_redemption`, called again by the task or by sweep_giftcards) goes on from it.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime

from worker.base.arguments import InvalidArgument
from worker.base.logs import bind_log_context
from worker.base.point_request import MAX_DESCRIPTION, PointRequest
from worker.flows.giftcards.issue import lease_seconds, process_order, toggle_of
from worker.flows.giftcards.outcomes import RedeemOutcome
from worker.flows.giftcards.requests import RedeemRequest
from worker.flows.parts import Parts
from worker.flows.points.booking import add_points
from worker.store.engine import utcnow
from worker.store.giftcards import LeaseLost, Orders, RedemptionRow, Redemptions
from worker.store.ledger import Ledger

log = logging.getLogger("pointsync.giftcards")

# The pause before a step that is waiting on someone else (Treazure's settle pause, the
# drain's push to Engage) is looked at again.
WAIT_SECONDS = 5.0
POINTS_BOOKED = ("booked", "applied")


async def redeem_points_for_gift_card(parts: Parts, request: RedeemRequest,
                                      source: str) -> RedeemOutcome:
    """Record the redemption, then take it as far as it goes now; the same reference again
    goes on from the step reached (or returns the finished outcome)."""
    toggle_of(parts)
    redemptions = Redemptions(parts.store)
    if redemptions.get(request.reference) is None and Orders(parts.store).get(
            request.reference) is not None:
        raise InvalidArgument(f"reference: {request.reference!r} is already used for a "
                              "gift card order")
    row, created = redemptions.record(
        request.reference, request.contact_id, request.points_cents, request.value_minor,
        request.email, request.description, source)
    if not created and (row.contact_id, row.points_cents, row.value_minor, row.email) != (
            request.contact_id, request.points_cents, request.value_minor, request.email):
        raise InvalidArgument(f"reference: {request.reference!r} is already used for a "
                              f"different redemption (contact {row.contact_id})")
    if row.final:
        return outcome(parts, row, duplicate=not created)
    return await resume_redemption(parts, request.reference)


async def resume_redemption(parts: Parts, reference: str) -> RedeemOutcome:
    """Go on from the recorded step as far as possible now."""
    bind_log_context(reference=reference)
    redemptions = Redemptions(parts.store)
    seconds = lease_seconds(parts)
    row = redemptions.outbox.claim(reference, seconds)
    if row is None:
        current = redemptions.get(reference)
        if current is None:
            raise InvalidArgument(f"reference: no redemption {reference!r} is recorded")
        return outcome(parts, current, duplicate=current.final, in_progress=not current.final)
    assert row.lease_until is not None
    lease = row.lease_until
    retry_in: float | None = None
    finished = False  # a final step lets go of the lease itself
    try:
        while not (finished := row.final):
            lease = redemptions.outbox.renew(reference, lease, seconds)
            retry_in = await _step(parts, redemptions, row, lease)
            if retry_in is not None:
                break
            row = redemptions.get(reference) or row
    finally:
        if not finished:  # waiting, or cut short: due again then (at once if cut short)
            with contextlib.suppress(LeaseLost):
                redemptions.outbox.release(reference, retry_in or 0.0, lease)
    current = redemptions.get(reference)
    assert current is not None
    return outcome(parts, current, retry_in=retry_in)


async def _step(parts: Parts, redemptions: Redemptions, row: RedemptionRow,
                lease: datetime) -> float | None:
    """Take the row's next step; None when it moved on, else when to look again."""
    ref = row.reference
    if row.state == "points_pending":
        points = await _book(parts, row, row.points_reference, -row.points_cents,
                             row.description)
        if points is None:
            return _waiting(parts, row.points_reference)
        if points.state == "failed":
            redemptions.step(ref, lease, "failed",
                             reason=f"points not taken: {points.reason}")
            log.warning("redemption %s refused: %s", ref, points.reason)
        else:
            redemptions.step(ref, lease, "points_taken")
        return None
    if row.state == "points_taken":
        orders = Orders(parts.store)
        orders.record(ref, row.value_minor, row.email, None,
                      f"points redemption for {row.contact_id}", row.source)
        redemptions.step(ref, lease, "card_pending")
        return None
    if row.state == "card_pending":
        card = await process_order(parts, ref)
        if card.state == "issued":
            redemptions.step(ref, lease, "card_issued", order_id=card.order_id,
                             line_item_id=card.line_item_id, card_masked=card.card_number)
        elif card.state == "failed":
            redemptions.step(ref, lease, "refund_pending", reason=card.reason)
            log.warning("redemption %s: card refused (%s); giving the points back",
                        ref, card.reason)
        else:
            return card.retry_in if card.retry_in is not None else WAIT_SECONDS
        return None
    if row.state == "card_issued":
        points_row = Ledger(parts.store).get(row.points_reference)
        if points_row is not None and points_row.state == "booked":
            return WAIT_SECONDS  # the drain sets the balance in Engage
        reason = None
        if points_row is not None and points_row.state == "failed":
            reason = f"card issued; the new balance did not reach Engage: {points_row.reason}"
        redemptions.step(ref, lease, "done", reason=reason)
        return None
    if row.state == "refund_pending":
        refund = await _book(parts, row, row.refund_reference, row.points_cents,
                             f"gift card {ref} refused: points back"[:MAX_DESCRIPTION])
        if refund is None:
            return _waiting(parts, row.refund_reference)
        if refund.state == "failed":
            redemptions.step(ref, lease, "failed", reason=(
                f"card refused ({row.reason}); the points were NOT given back: "
                f"{refund.reason}"))
        else:
            redemptions.step(ref, lease, "refunded")  # the reason stays Toggle's
        return None
    raise AssertionError(f"redemption {ref} in unknown state {row.state!r}")


class _Booked:
    def __init__(self, state: str, reason: str | None) -> None:
        self.state, self.reason = state, reason


async def _book(parts: Parts, row: RedemptionRow, reference: str, cents: int,
                description: str) -> _Booked | None:
    """The points ledger's row for `reference`, booked or failed; None while still open.
    A row already booked is not sent again; an open one goes through add_points, which
    books it exactly once."""
    known = Ledger(parts.store).get(reference)
    if known is None or known.state == "received":
        source = "cli" if row.source == "cli" else "task"
        await add_points(parts, PointRequest(row.contact_id, cents, description, reference),
                         source)
        known = Ledger(parts.store).get(reference)
    assert known is not None
    # A row the drain failed later (Engage refused the balance) was still booked.
    if known.state in POINTS_BOOKED or known.booked_at is not None:
        return _Booked(known.state, None)
    if known.state == "failed":
        return _Booked("failed", known.reason)
    return None


def _waiting(parts: Parts, points_reference: str) -> float:
    """When to look at a points row that is still open again: when the ledger planned."""
    known = Ledger(parts.store).get(points_reference)
    if known is None or known.next_attempt_at is None:
        return WAIT_SECONDS
    return max(0.0, (known.next_attempt_at - utcnow()).total_seconds())


def outcome(parts: Parts, row: RedemptionRow, *, retry_in: float | None = None,
            **flags: bool) -> RedeemOutcome:
    points = Ledger(parts.store).get(row.points_reference)
    return RedeemOutcome.of(row, points_state=points.state if points else None,
                            retry_in=retry_in, **flags)
