"""Backfill, which Toggle does not offer: past orders read from Toggle's API (the gift-cards
client, within its shared credit budget) and recorded as `order.created` events for
Atreemo, through the relay's own record, so they are delivered like live ones.

Never twice for one order: a backfilled event is recorded under `backfill-order-<id>` (a
key no Toggle event id can take, and the same on every backfill, so a second one records
nothing), and an order that already has an `order.created` recorded about it (`order:<id>`,
the subject a live one has) is skipped before anything is recorded.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from worker.flows.parts import Parts
from worker.flows.relays.receive import DESTINATIONS, TOGGLE, read
from worker.store.relays import Relays
from worker.systems.toggle.client import MAX_LIMIT
from worker.systems.toggle.results import Order

ORDER_CREATED = "order.created"
BACKFILL_PREFIX = "backfill-order-"

# (orders seen so far, how many the window holds)
Progress = Callable[[int, int], None]


class BackfillUnavailable(Exception):
    """Toggle's API or the Toggle → Atreemo relay is not configured."""


@dataclass
class BackfillOutcome:
    seen: int = 0
    recorded: int = 0
    live: int = 0  # skipped: its order.created was relayed live
    repeated: int = 0  # skipped: backfilled before
    total: int = 0
    subjects: list[str] = field(default_factory=list)  # to deliver now

    def as_dict(self) -> dict[str, Any]:
        return {"seen": self.seen, "recorded": self.recorded, "skipped_live": self.live,
                "skipped_repeated": self.repeated, "total": self.total}


def backfill_event_id(order_id: int) -> str:
    return f"{BACKFILL_PREFIX}{order_id}"


def order_envelope(order: Order, account_id: int | None) -> bytes:
    """Toggle's event envelope for `order` per the contract's `order.*` shape (the fields
    Orders answers; no receipt contact, which Orders does not give)."""
    obj = {
        "object": "order", "id": order.id, "value": order.value_minor,
        "account_id": account_id, "created_at": order.created_at,
        "merchant_transaction_reference": order.reference, "receipt_contact": None,
        "line_items": [{
            "id": item.id, "value": item.value_minor,
            "card": None if item.card is None else {
                "object": "card", "id": item.card.id,
                "card_reference": item.card.card_reference,
                "balance": item.card.balance_minor},
        } for item in order.line_items],
    }
    envelope = {"id": backfill_event_id(order.id), "object": "event",
                "created_at": order.created_at, "type": ORDER_CREATED,
                "data": {"object": obj}}
    return json.dumps(envelope, separators=(",", ":")).encode("utf-8")


def record_order(relays: Relays, order: Order, account_id: int | None) -> tuple[str, str]:
    """(`recorded`, `live` or `repeated`; the subject, read as a live event's would be)."""
    body = order_envelope(order, account_id)
    event_id, topic, subject, created_at = read(TOGGLE, body, {})
    if relays.has_topic(TOGGLE, subject, ORDER_CREATED) and relays.event(
            TOGGLE, event_id) is None:
        return "live", subject
    _, recorded = relays.record(
        source=TOGGLE, event_id=event_id, topic=topic, subject=subject,
        source_created_at=created_at, body=body, destinations=DESTINATIONS[TOGGLE])
    return ("recorded" if recorded else "repeated"), subject


async def backfill_toggle_orders(parts: Parts, since: datetime, until: datetime | None = None,
                                 *, page_size: int = MAX_LIMIT,
                                 progress: Progress | None = None) -> BackfillOutcome:
    """Record every order Toggle created in [since, until] as `order.created`, page by page,
    oldest first. The caller queues delivery of `outcome.subjects`."""
    if parts.toggle is None:
        raise BackfillUnavailable("Toggle's API is not configured (TOGGLE_*)")
    if not parts.settings.toggle_relay_enabled:
        raise BackfillUnavailable("the Toggle → Atreemo relay is not configured "
                                  "(TOGGLE_WEBHOOK_SECRET, ATREEMO_*)")
    relays = Relays(parts.store)
    account_id = parts.settings.TOGGLE_ACCOUNT_ID
    outcome = BackfillOutcome()
    page = 1
    while True:
        answer = await parts.toggle.orders(since, until, page=page, limit=page_size)
        outcome.total = answer.total
        for order in answer.orders:
            result, subject = record_order(relays, order, account_id)
            outcome.seen += 1
            if result == "recorded":
                outcome.recorded += 1
                outcome.subjects.append(subject)
            elif result == "live":
                outcome.live += 1
            else:
                outcome.repeated += 1
        if progress is not None:
            progress(outcome.seen, outcome.total)
        if not answer.orders or answer.current_page * answer.per_page >= answer.total:
            return outcome
        page += 1
