"""Issuing a gift card: one Toggle order per reference, whatever fails.

The order row is recorded first; a worker holding its lease marks it uncertain (committed)
before createOrder leaves. An uncertain row, a lost answer and `Duplicate reference
supplied` are all resolved the same way: the reference is looked up in Toggle (LineItems)
before anything is sent again; what it made is recorded as issued (its PIN then unknown to
us: Toggle emailed it, or the venue reads it in Toggle). Toggle's own refusal of a second
order with the same reference backs this up.

The PIN of a card issued now is returned in CardOutcome.pin, never stored, logged or put in
`as_dict()` (task results, Flower).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime

from worker.base.arguments import InvalidArgument
from worker.base.backoff import doubled
from worker.base.http import Ambiguous, RemoteError, Retryable
from worker.base.logs import bind_log_context
from worker.flows.giftcards.outcomes import CardOutcome
from worker.flows.giftcards.requests import CardRequest
from worker.flows.parts import Parts
from worker.store.giftcards import LeaseLost, OrderRow, Orders
from worker.systems.toggle.cards import format_minor, mask_card_number
from worker.systems.toggle.client import ToggleClient
from worker.systems.toggle.errors import AnswerLost, DuplicateReference, ToggleRefused
from worker.systems.toggle.results import Card, LineItem

log = logging.getLogger("pointsync.giftcards")

RETRY_BASE_SECONDS = 1.0
# Toggle's throttle may hold a call for a while: the lease covers that with room to spare.
MIN_LEASE_SECONDS = 60.0


def toggle_of(parts: Parts) -> ToggleClient:
    if parts.toggle is None:
        raise InvalidArgument("toggle: gift cards need TOGGLE_USERNAME, TOGGLE_PASSWORD and "
                              "TOGGLE_ACCOUNT_ID to be set")
    return parts.toggle


def lease_seconds(parts: Parts) -> float:
    return max(MIN_LEASE_SECONDS, float(parts.settings.POINTS_LEASE_SECONDS))


def record_order(parts: Parts, request: CardRequest, source: str) -> tuple[OrderRow, bool]:
    """The order row (created, or the reference's): the same reference with other content
    is refused."""
    row, created = Orders(parts.store).record(request.reference, request.value_minor,
                                              request.email, request.message, request.note,
                                              source)
    if not created and (row.value_minor, row.email, row.message, row.note) != (
            request.value_minor, request.email, request.message, request.note):
        raise InvalidArgument(
            f"reference: {request.reference!r} is already used for a different gift card "
            f"(value {format_minor(row.value_minor)})")
    return row, created


async def issue_gift_card(parts: Parts, request: CardRequest, source: str) -> CardOutcome:
    """Record, then issue one card; the same reference again returns the first outcome."""
    toggle_of(parts)
    row, created = record_order(parts, request, source)
    if row.final:
        return CardOutcome.of(row, duplicate=not created)
    return await process_order(parts, request.reference)


async def process_order(parts: Parts, reference: str) -> CardOutcome:
    """Move a recorded order on as far as it goes now (the task, the sweep, a redemption)."""
    bind_log_context(reference=reference)
    toggle = toggle_of(parts)
    orders = Orders(parts.store)
    seconds = lease_seconds(parts)
    row = orders.outbox.claim(reference, seconds)
    if row is None:
        current = orders.get(reference)
        if current is None:
            raise InvalidArgument(f"reference: no gift card {reference!r} is recorded")
        return CardOutcome.of(current, duplicate=current.final, in_progress=not current.final)
    assert row.lease_until is not None
    held = _Held(row.lease_until)
    retry_in: float | None = 0.0
    pin: str | None = None
    try:
        # Cut short before the lease could run out: nobody else may take the row meanwhile.
        async with asyncio.timeout(seconds - min(5.0, seconds / 6)):
            retry_in, pin = await _issue(parts, toggle, orders, row, held, seconds)
    except TimeoutError:
        retry_in = 0.0
    finally:
        if retry_in is not None:
            with contextlib.suppress(LeaseLost):
                orders.outbox.release(reference, retry_in, held.until)
    final = orders.get(reference)
    assert final is not None
    return CardOutcome.of(final, pin=pin, retry_in=retry_in)


@dataclass
class _Held:
    until: datetime  # the row's lease_until as last claimed or renewed


async def _issue(parts: Parts, toggle: ToggleClient, orders: Orders, row: OrderRow,
                 held: _Held, seconds: float) -> tuple[float | None, str | None]:
    """One attempt: (retry in, PIN); retry None when the row is final."""
    ref, box, lease = row.reference, orders.outbox, held.until
    if row.uncertain:
        found = await _made_by(toggle, ref)
        if found is _UNKNOWN:
            return _pause(parts, row.attempts), None
        if isinstance(found, LineItem):
            _issued_from_item(orders, ref, lease, found)
            return None, None
        box.move(ref, lease, uncertain=False)
    if row.attempts >= parts.settings.POINTS_MAX_ATTEMPTS:
        box.fail(ref, f"gave up after {row.attempts} attempts: {row.reason}", lease)
        return None, None
    lease = held.until = box.renew(ref, lease, seconds)
    box.mark_uncertain(ref, lease)
    attempts = row.attempts + 1
    try:
        order = await toggle.create_order(row.value_minor, ref, email=row.email,
                                          message=row.message, note=row.note)
    except (DuplicateReference, AnswerLost) as exc:
        log.warning("gift card %s: %s; looking the reference up", ref, exc)
        found = await _made_by(toggle, ref)
        if isinstance(found, LineItem):
            _issued_from_item(orders, ref, lease, found)
            return None, None
        # Not made (or not visible yet): the row stays uncertain, so the next attempt
        # looks the reference up again before sending.
        box.move(ref, lease, reason=str(exc))
        return _pause(parts, attempts), None
    except ToggleRefused as exc:
        box.fail(ref, refusal_text(exc), lease)
        return None, None
    except Retryable as exc:  # never reached Toggle, or refused whole (throttled)
        box.move(ref, lease, uncertain=False, reason=str(exc))
        return max(_pause(parts, attempts), exc.retry_after or 0.0), None
    except (Ambiguous, RemoteError) as exc:  # unauthorized, odd answers: look up first
        box.move(ref, lease, reason=str(exc))
        return _pause(parts, attempts), None
    card = order.card
    item = next((i for i in order.line_items if i.card is not None), None)
    orders.issued(ref, lease, order_id=order.id, line_item_id=item.id if item else None,
                  card_id=card.id if card else None,
                  card_reference=card.card_reference if card else None,
                  card_masked=card.masked if card else None)
    log.info("gift card %s issued: %s", ref, card.masked if card else "no card in answer")
    return None, card.pin if card else None


class _Unknown:
    pass


_UNKNOWN = _Unknown()


async def _made_by(toggle: ToggleClient, reference: str) -> LineItem | _Unknown | None:
    """The card line item the reference made in Toggle, None when it made none, _UNKNOWN
    while Toggle cannot be asked."""
    try:
        items = await toggle.line_items_for(reference)
    except RemoteError as exc:
        log.warning("gift card %s: cannot look the reference up: %s", reference, exc)
        return _UNKNOWN
    return next((i for i in items if i.card is not None), items[0] if items else None)


def _issued_from_item(orders: Orders, reference: str, lease: datetime, item: LineItem) -> None:
    card: Card | None = item.card
    orders.issued(reference, lease, order_id=None, line_item_id=item.id,
                  card_id=card.id if card else None,
                  card_reference=card.card_reference if card else None,
                  card_masked=mask_card_number(card.card_reference) if card else None)
    log.info("gift card %s was issued by an earlier attempt", reference)


def refusal_text(exc: ToggleRefused) -> str:
    """Toggle's message verbatim, then its field messages when it gave any."""
    if not exc.validation:
        return exc.message
    fields = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.validation.items())
    return f"{exc.message} ({fields})"


def _pause(parts: Parts, attempts: int) -> float:
    return doubled(RETRY_BASE_SECONDS, max(0, attempts - 1),
                   parts.settings.POINTS_RETRY_MAX_SECONDS)
