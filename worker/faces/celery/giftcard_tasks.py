"""Gift-card tasks (interface.md): validate, run the flow, return its outcome's as_dict().

Callers read these results, so they are kept (unlike the booking tasks'). A result and the
task's arguments never hold a PIN, and card numbers only masked: what Flower and the result
backend show is safe. A call without `reference` takes it from the task id (call_reference),
so a redelivered message is the same call and acts once. Each body imports its flow
(lazy.py says why; it also registers Toggle's outcome counts for /metrics).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from worker.faces.celery.app import app
from worker.faces.celery.lazy import run_with_parts
from worker.faces.celery.tasks import NO_RESULT, call_reference, start_drain_if_booked
from worker.flows.giftcards.requests import (
    validate_adjust_request,
    validate_card_request,
    validate_redeem_request,
)
from worker.systems.toggle.cards import mask_card_number

if TYPE_CHECKING:
    from worker.flows.parts import Parts

SOURCE = "task"
# An outcome due again this soon is sent again as the same call (the same reference);
# later ones, and a lost message, are the sweep's.
REQUEUE_MAX_SECONDS = 60.0


def _again(outcome: Any) -> float | None:
    retry_in = getattr(outcome, "retry_in", None)
    if retry_in is not None and retry_in <= REQUEUE_MAX_SECONDS:
        return float(retry_in)
    return None


@app.task(name="pointsync.issue_gift_card", bind=True)
def issue_gift_card(
    self: Any, value: str | int | float, email: str | None = None,
    reference: str | None = None, message: str | None = None, note: str | None = None,
) -> dict[str, Any]:
    """One Toggle order (one card) per `reference`, whatever fails; emailed by Toggle when
    `email` is given, handed over in venue otherwise (its PIN is not in this result)."""
    from worker.flows.giftcards import issue
    request = validate_card_request(value, email, reference, message, note,
                                    fallback_reference=call_reference(self, "gc"))
    outcome = run_with_parts(lambda parts: issue.issue_gift_card(parts, request, SOURCE))
    if (countdown := _again(outcome)) is not None:
        issue_gift_card.apply_async(
            kwargs={"value": value, "email": email, "reference": request.reference,
                    "message": message, "note": note}, countdown=countdown, **NO_RESULT)
    return outcome.as_dict()


@app.task(name="pointsync.redeem_points_for_gift_card", bind=True)
def redeem_points_for_gift_card(
    self: Any, contact_id: str, points: str | int | float, value: str | int | float,
    email: str, description: str | None = None, reference: str | None = None,
) -> dict[str, Any]:
    """Take the points in Treazure once and issue one card for them; a card Toggle refuses
    for good gives the points back, once (state `refunded`, with Toggle's reason)."""
    from worker.flows.giftcards import redeem
    request = validate_redeem_request(contact_id, points, value, email, description, reference,
                                      fallback_reference=call_reference(self, "gcr"))

    async def work(parts: Parts) -> redeem.RedeemOutcome:
        outcome = await redeem.redeem_points_for_gift_card(parts, request, SOURCE)
        # The points' new balance reaches Engage with the next drain, not the sweep's.
        await start_drain_if_booked(parts, outcome.points_state)
        return outcome

    outcome = run_with_parts(work)
    if (countdown := _again(outcome)) is not None:
        redeem_points_for_gift_card.apply_async(
            kwargs={"contact_id": contact_id, "points": points, "value": value,
                    "email": email, "description": description,
                    "reference": request.reference}, countdown=countdown, **NO_RESULT)
    return outcome.as_dict()


@app.task(name="pointsync.adjust_gift_card", bind=True)
def adjust_gift_card(
    self: Any, card_reference: str, value: str | int | float, site: str,
    reference: str | None = None,
) -> dict[str, Any]:
    """One redemption (negative `value`) or top-up (positive) per `reference`, at a site of
    TOGGLE_SITES. The card number is an argument (the till needs it); results mask it."""
    from worker.flows.giftcards import till

    async def work(parts: Parts) -> Any:
        request = validate_adjust_request(card_reference, value, site, reference,
                                          fallback_reference=call_reference(self, "gca"),
                                          settings=parts.settings)
        return await till.adjust_gift_card(parts, request, SOURCE)

    outcome = run_with_parts(work)
    if (countdown := _again(outcome)) is not None:
        again = {"card_reference": card_reference, "value": value, "site": site,
                 "reference": outcome.reference}
        # Flower shows a message's kwargsrepr: the number masked there.
        shown = {**again, "card_reference": mask_card_number(card_reference)}
        adjust_gift_card.apply_async(kwargs=again, kwargsrepr=repr(shown),
                                     countdown=countdown, **NO_RESULT)
    return dict(outcome.as_dict())


@app.task(name="pointsync.reverse_gift_card")
def reverse_gift_card(reference: str, site: str) -> dict[str, Any]:
    """Reverse what `reference` made (an adjustment or a card order), once
    (`{reference}-REVERSAL` in Toggle)."""
    from worker.flows.giftcards import till
    outcome = run_with_parts(
        lambda parts: till.reverse_gift_card(parts, reference, site, SOURCE))
    if (countdown := _again(outcome)) is not None:
        reverse_gift_card.apply_async(kwargs={"reference": reference, "site": site},
                                      countdown=countdown, **NO_RESULT)
    return dict(outcome.as_dict())


@app.task(name="pointsync.gift_card_balance", track_started=False)
def gift_card_balance(card_reference: str) -> dict[str, Any]:
    """The card's balance (a query; the number masked in the result)."""
    from worker.flows.giftcards import till
    outcome = run_with_parts(lambda parts: till.card_balance(parts, card_reference))
    return dict(outcome.as_dict())


@app.task(name="pointsync.sweep_giftcards", **NO_RESULT)
def sweep_giftcards_task() -> dict[str, int]:
    """Finish gift-card orders, redemptions and till operations whose task was lost."""
    from worker.flows.giftcards import till
    from worker.flows.giftcards.sweep import sweep_giftcards

    async def work(parts: Parts) -> dict[str, int]:
        counts = await sweep_giftcards(parts)
        if parts.toggle is not None:
            till_counts = await till.sweep_adjustments(parts)
            counts = {**counts, **{f"adjustments_{k}": v for k, v in till_counts.items()}}
        return counts

    return run_with_parts(work)
