"""What a till does with Toggle: a card's balance, redeem, top up and reverse at a site.

Every adjustment and reversal is recorded (committed) before it is sent, once per
reference, on the outbox (till_store.py):
- a row is leased, marked `uncertain` and only then sent, so a worker killed mid-call
  leaves a row the next attempt resolves first;
- an uncertain row, a lost answer and `Duplicate reference supplied` are all resolved by
  looking the reference up (LineItems): found means applied, never sent twice; not found
  after a lost answer means not applied: the row is let go to be tried again;
- Toggle's refusals (negative balance, unknown card, unknown site, a second reversal)
  end the row `failed` with Toggle's message verbatim.
A reversal is a row of its own under `{reference}-REVERSAL`, so reversing twice answers
the first outcome and sends nothing.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Protocol

from worker.base.arguments import InvalidArgument
from worker.base.http import Rejected, RemoteError, Retryable
from worker.base.logs import bind_log_context
from worker.base.point_request import validate_reference
from worker.base.settings import Settings
from worker.flows.giftcards.till_outcomes import AdjustOutcome, BalanceOutcome
from worker.flows.giftcards.till_store import (
    ADJUSTMENT,
    REVERSAL,
    AdjustmentRow,
    LeaseLost,
    TillRows,
)
from worker.flows.parts import Parts
from worker.store.giftcards import Orders
from worker.systems.toggle.cards import mask_card_number, valid_card_number
from worker.systems.toggle.client import ToggleClient, reversal_reference
from worker.systems.toggle.errors import (
    AnswerLost,
    DuplicateReference,
    ToggleRefused,
    ToggleUnauthorized,
)
from worker.systems.toggle.results import LineItem

log = logging.getLogger("pointsync.giftcards")

# A lost answer is looked up again after this: Toggle may still be applying it.
LOOKUP_AGAIN_SECONDS = 5.0
RETRY_SECONDS = 30.0


class AdjustArguments(Protocol):
    """What adjust_gift_card needs of a validated request (requests.AdjustRequest, a
    frozen dataclass: read-only members)."""

    @property
    def card_reference(self) -> str: ...
    @property
    def value_minor(self) -> int: ...
    @property
    def site(self) -> str: ...
    @property
    def reference(self) -> str: ...


def _toggle(parts: Parts) -> ToggleClient:
    if parts.toggle is None:
        raise RuntimeError("Toggle is not configured (TOGGLE_USERNAME and the rest)")
    return parts.toggle


def card_argument(settings: Settings, card_reference: str) -> str:
    """The card number (or alias) as Toggle takes it; the issuer's rule while
    TOGGLE_VALIDATE_CARD_NUMBER is on. Raised before any call, naming the argument."""
    number = "".join(str(card_reference or "").split())
    if not number:
        raise InvalidArgument("card_reference: required")
    if settings.TOGGLE_VALIDATE_CARD_NUMBER and not valid_card_number(number):
        raise InvalidArgument(
            f"card_reference: {mask_card_number(number)} is not a Toggle card number "
            "(19 digits starting 63011900; TOGGLE_VALIDATE_CARD_NUMBER is on)")
    return number


def site_reference(settings: Settings, site: str) -> str:
    """Toggle's unit_epos_reference for a TOGGLE_SITES name; raised before any call."""
    found = settings.TOGGLE_SITES.get(site)
    if found is None:
        known = ", ".join(sorted(settings.TOGGLE_SITES)) or "none configured"
        raise InvalidArgument(f"site: {site!r} is not a site of TOGGLE_SITES ({known})")
    return found


# -- balance ------------------------------------------------------------------------------


async def card_balance(parts: Parts, card_reference: str) -> BalanceOutcome:
    """The card's balance: a query, nothing recorded."""
    number = card_argument(parts.settings, card_reference)
    card = await _toggle(parts).card_balance(number)
    if card is None:
        return BalanceOutcome(number, "unknown", reason=(
            f"card_reference: Toggle has no card {mask_card_number(number)} "
            "(neither its number nor an alias)"))
    return BalanceOutcome(number, "ok", card=card)


# -- redeem and top up --------------------------------------------------------------------


async def adjust_gift_card(parts: Parts, request: AdjustArguments,
                           source: str) -> AdjustOutcome:
    """One redemption (negative) or top-up (positive) per reference, whatever fails."""
    number = card_argument(parts.settings, request.card_reference)
    at = site_reference(parts.settings, request.site)
    if request.value_minor == 0:
        raise InvalidArgument("value: must not be zero")
    _toggle(parts)
    row, created = TillRows(parts.store).record(
        request.reference, kind=ADJUSTMENT, site=request.site, site_reference=at,
        source=source, card_reference=number, value_minor=request.value_minor)
    if row.final:
        return AdjustOutcome(row, duplicate=not created)
    return await process_adjustment(parts, request.reference)


# -- reverse ------------------------------------------------------------------------------


async def reverse_gift_card(parts: Parts, reference: str, site: str,
                            source: str) -> AdjustOutcome:
    """Reverse what `reference` made (an adjustment or a card order), once."""
    if not reference:
        raise InvalidArgument("reference: the reference to reverse is required")
    reference = validate_reference(reference)
    at = site_reference(parts.settings, site)
    _toggle(parts)
    adjustments = TillRows(parts.store)
    card, value = _known_original(parts, adjustments, reference)
    key = reversal_reference(reference)
    row, created = adjustments.record(
        key, kind=REVERSAL, site=site, site_reference=at, source=source,
        card_reference=card, value_minor=None if value is None else -value,
        original_reference=reference)
    if row.final:
        return AdjustOutcome(row, duplicate=not created)
    return await process_adjustment(parts, key)


def _known_original(parts: Parts, adjustments: TillRows,
                    reference: str) -> tuple[str | None, int | None]:
    """The card and value of what `reference` made, when it is ours; refused before any
    call when it cannot be reversed (a reversal, or not settled yet)."""
    original = adjustments.get(reference)
    if original is not None:
        if original.kind == REVERSAL:
            raise InvalidArgument(f"reference: {reference!r} is a reversal; it cannot be "
                                  "reversed")
        if not original.final:
            raise InvalidArgument(f"reference: {reference!r} is still being applied; "
                                  "reverse it once it is")
        if original.state != "applied":
            raise InvalidArgument(f"reference: {reference!r} was not applied "
                                  f"({original.reason}); there is nothing to reverse")
        return original.card_reference, original.value_minor
    order = Orders(parts.store).get(reference)
    if order is not None:
        if not order.final:
            raise InvalidArgument(f"reference: the card order {reference!r} is still being "
                                  "issued; reverse it once it is")
        return order.card_reference, order.value_minor
    return None, None


# -- the work on one row (also what the sweep calls for a lost row) -----------------------


async def sweep_adjustments(parts: Parts, limit: int = 1000) -> dict[str, int]:
    """Finish open rows whose worker was lost (the gift-card sweep calls this)."""
    counts = {"applied": 0, "failed": 0, "open": 0}
    for row in TillRows(parts.store).lost(parts.settings.POINTS_STALE_SECONDS, limit):
        outcome = await process_adjustment(parts, row.reference)
        counts[outcome.state if outcome.state in counts else "open"] += 1
    return counts


async def process_adjustment(parts: Parts, reference: str) -> AdjustOutcome:
    """Move an open row on as far as it goes now: applied, failed, or let go for later."""
    bind_log_context(reference=reference)
    adjustments = TillRows(parts.store)
    seconds = parts.settings.POINTS_LEASE_SECONDS
    row = adjustments.claim(reference, seconds)
    if row is None:  # final, or another worker holds it right now
        current = adjustments.get(reference)
        if current is None:
            raise InvalidArgument(f"reference: no gift-card adjustment {reference!r} is recorded")
        return AdjustOutcome(current, duplicate=current.final, in_progress=not current.final)
    assert row.lease_until is not None
    try:
        retry_in = await _settle(parts, adjustments, row, row.lease_until, seconds)
    except LeaseLost:
        log.warning("gift-card adjustment %s: lease lost to another worker", reference)
        return AdjustOutcome(adjustments.row(reference), in_progress=True)
    return AdjustOutcome(adjustments.row(reference), retry_in=retry_in)


async def _settle(parts: Parts, adjustments: TillRows, row: AdjustmentRow,
                  lease: datetime, seconds: float) -> float | None:
    """Resolve, send once and settle; returns when to try again (None: settled)."""
    toggle, ref = _toggle(parts), row.reference
    try:
        if row.uncertain and await _found(parts, adjustments, row, lease):
            return None
        line_item_id: int | None = None
        if row.kind == REVERSAL:
            line_item_id = await _original_line_item(parts, adjustments, row)
            if line_item_id is None:
                adjustments.fail(ref, f"reference: Toggle has nothing under "
                                      f"{row.original_reference!r} to reverse", lease)
                return None
        lease = adjustments.sending(ref, lease, seconds)
        try:
            if row.kind == REVERSAL:
                assert row.original_reference is not None and line_item_id is not None
                reversal = await toggle.reverse(row.original_reference, line_item_id,
                                                row.site_reference)
                # Its own line item (the card's balance after) is looked up; a lookup
                # that fails leaves them unknown, the reversal applied all the same.
                try:
                    items = await _lookup(toggle, ref)
                except RemoteError:
                    items = []
                item = items[0] if items else None
                adjustments.applied(
                    ref, lease, reversal_id=reversal.id, value_minor=reversal.value_minor,
                    line_item_id=item.id if item else None,
                    balance_minor=_balance(item),
                    card_reference=item.card.card_reference if item and item.card else None)
            else:
                assert row.card_reference is not None and row.value_minor is not None
                done = await toggle.adjust(row.card_reference, row.value_minor,
                                           row.site_reference, ref)
                adjustments.applied(ref, lease, adjustment_id=done.id,
                                    line_item_id=done.line_item_id,
                                    balance_minor=done.balance_minor)
            log.info("gift-card %s %s applied", row.kind, ref)
            return None
        except (DuplicateReference, AnswerLost) as exc:
            log.warning("gift-card %s %s: %s; looking the reference up", row.kind, ref, exc)
            if await _found(parts, adjustments, row, lease):
                return None
            if isinstance(exc, DuplicateReference):
                adjustments.fail(ref, f"reference: {exc.message}: Toggle holds {ref!r} for "
                                      "something that is not this request", lease)
                return None
            adjustments.not_sent(ref, lease, f"answer lost, not applied in Toggle: {exc}")
            adjustments.later(ref, lease, LOOKUP_AGAIN_SECONDS)
            return LOOKUP_AGAIN_SECONDS
        except ToggleRefused as exc:
            adjustments.fail(ref, str(exc.reason), lease)
            return None
    except (Retryable, ToggleUnauthorized) as exc:
        # Applied nothing (never left, throttled, our login refused) or a lookup failed:
        # an uncertain row stays so, and is looked up first next time.
        log.warning("gift-card %s %s not settled yet: %s", row.kind, ref, exc)
        adjustments.later(ref, lease, RETRY_SECONDS, str(exc))
        return RETRY_SECONDS
    except Rejected as exc:  # an answer that is not GraphQL, say: nothing to retry
        adjustments.fail(ref, str(exc.reason), lease)
        return None


async def _lookup(toggle: ToggleClient, reference: str) -> list[LineItem]:
    return await toggle.line_items_for(reference)


def _balance(item: LineItem | None) -> int | None:
    return item.card.balance_minor if item is not None and item.card is not None else None


async def _found(parts: Parts, adjustments: TillRows, row: AdjustmentRow,
                 lease: datetime) -> bool:
    """Whether Toggle holds what this row asked for (then it is settled `applied`)."""
    items = await _lookup(_toggle(parts), row.reference)
    if not items:
        return False
    item = items[0]
    if row.kind == ADJUSTMENT and item.value_minor not in (None, row.value_minor):
        return False  # the reference made something else (an order): not ours
    log.info("gift-card %s %s was applied by an earlier attempt", row.kind, row.reference)
    adjustments.applied(
        row.reference, lease, line_item_id=item.id,
        balance_minor=_balance(item),
        value_minor=item.value_minor if row.kind == REVERSAL else None,
        card_reference=(item.card.card_reference
                        if row.kind == REVERSAL and item.card is not None else None))
    return True


async def _original_line_item(parts: Parts, adjustments: TillRows,
                              row: AdjustmentRow) -> int | None:
    """The line item the reversed reference made: ours (an adjustment or a card order)
    if we have it, else what Toggle holds under that reference."""
    original = row.original_reference
    assert original is not None
    ours = adjustments.applied_line_item(original)
    if ours is not None:
        return ours
    order = Orders(parts.store).get(original)
    if order is not None and order.state == "issued" and order.line_item_id is not None:
        return order.line_item_id
    items = await _lookup(_toggle(parts), original)
    return items[0].id if items else None
