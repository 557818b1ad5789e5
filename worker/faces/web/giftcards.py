"""POST /gift-cards and GET /gift-cards/{reference}: issue a card from a kiosk or an app,
behind the `apikey`, and follow it.

The order row is recorded (committed) before the task is queued, so a failed send loses
nothing: the gift-card sweep finishes a recorded row whose task never came. Answers carry
the masked card number only; a PIN is never recorded, so never answered.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from worker.base.arguments import InvalidArgument
from worker.base.settings import WebSettings
from worker.faces.web.context import SETTINGS, STORE, Refused, blocking, refuse, short_error
from worker.faces.web.history import _check_api_key
from worker.faces.web.queueing import task_sender
from worker.flows.giftcards.issue import record_order
from worker.flows.giftcards.requests import CardRequest, validate_card_request
from worker.flows.parts import Parts
from worker.store.database import Store
from worker.store.giftcards import OrderRow, Orders
from worker.systems.toggle.cards import format_minor, mask_card_number

log = logging.getLogger("pointsync.web")

TASK = "pointsync.issue_gift_card"
SOURCE = "web"
ARGUMENTS = ("value", "email", "reference", "message", "note")
# `pointsync.issue_gift_card` kwargs -> anything (the send's handle, unread)
GiftEnqueue = Callable[[dict[str, Any]], object]
GIFT_ENQUEUE: web.AppKey[GiftEnqueue] = web.AppKey("gift_enqueue")


def add_giftcard_routes(app: web.Application, enqueue: GiftEnqueue | None = None) -> None:
    """The routes, and how their tasks are queued (tests may set GIFT_ENQUEUE before the
    app starts)."""
    app[GIFT_ENQUEUE] = enqueue or celery_gift_enqueue(app[SETTINGS])
    app.router.add_post("/gift-cards", issue_card)
    app.router.add_get("/gift-cards/{reference}", card_state)


async def issue_card(request: web.Request) -> web.Response:
    app = request.app
    settings = app[SETTINGS]
    try:
        _check_api_key(request.headers, settings)
        if not settings.toggle_enabled:
            refuse(503, "gift cards: Toggle is not configured on this service")
        card = _card_request(await request.read())
        try:
            row, _ = await blocking(app, _record, app[STORE], settings, card)
        except InvalidArgument as exc:  # the reference is used for another card
            refuse(409, str(exc))
        except SQLAlchemyError as exc:
            log.warning("gift card %s: database error: %s", card.reference,
                        short_error(exc, settings))
            refuse(503, "database: unavailable, try again later")
    except Refused as refused:
        return web.json_response({"error": refused.error}, status=refused.status)
    if not row.final:
        kwargs = {"value": format_minor(card.value_minor), "email": card.email,
                  "reference": card.reference, "message": card.message, "note": card.note}
        try:
            await blocking(app, app[GIFT_ENQUEUE], kwargs)
        except Exception as exc:  # recorded: the sweep finishes it
            log.warning("gift card %s: recorded, but queueing its task failed (%s); the "
                        "sweep issues it", card.reference, short_error(exc, settings))
    return web.json_response({"reference": row.reference, "state": row.state}, status=202)


def _card_request(body: bytes) -> CardRequest:
    """The arguments of pointsync.issue_gift_card from a JSON object; 422 naming the field."""
    try:
        data = json.loads(body or b"null")
    except ValueError:
        refuse(422, "body: must be a JSON object of the issue_gift_card arguments")
    if not isinstance(data, dict):
        refuse(422, "body: must be a JSON object of the issue_gift_card arguments")
    unknown = sorted(set(data) - set(ARGUMENTS))
    if unknown:
        refuse(422, f"{unknown[0]}: not an argument of issue_gift_card "
                    f"({', '.join(ARGUMENTS)})")
    if "value" not in data:
        refuse(422, "value: is required (the card's value, e.g. \"25.00\")")
    try:
        return validate_card_request(*(data.get(name) for name in ARGUMENTS))
    except InvalidArgument as exc:
        refuse(422, str(exc))


def _record(store: Store, settings: WebSettings, card: CardRequest) -> tuple[OrderRow, bool]:
    # record_order reads only the parts' store (and settings): no clients are needed to
    # record, and the web process keeps none for Toggle.
    parts = cast(Parts, SimpleNamespace(store=store, settings=settings))
    return record_order(parts, card, SOURCE)


async def card_state(request: web.Request) -> web.Response:
    app = request.app
    try:
        _check_api_key(request.headers, app[SETTINGS])
        reference = request.match_info["reference"]
        try:
            row = await blocking(app, Orders(app[STORE]).get, reference)
        except SQLAlchemyError as exc:
            log.warning("gift card %s: database error: %s", reference,
                        short_error(exc, app[SETTINGS]))
            refuse(503, "database: unavailable, try again later")
        if row is None:
            refuse(404, f"reference: no gift card {reference!r}")
    except Refused as refused:
        return web.json_response({"error": refused.error}, status=refused.status)
    return web.json_response(card_answer(row))


def card_answer(row: OrderRow) -> dict[str, Any]:
    """What GET answers: the state, Toggle's order id, the masked number, never more."""
    return {"reference": row.reference, "state": row.state, "order_id": row.order_id,
            "card_number": row.card_masked or (mask_card_number(row.card_reference) or None),
            "value": format_minor(row.value_minor), "reason": row.reason,
            "email": row.email}


def celery_gift_enqueue(settings: WebSettings) -> GiftEnqueue:
    """Queue pointsync.issue_gift_card for a recorded order (the row is the outcome)."""
    return task_sender(settings, TASK)
