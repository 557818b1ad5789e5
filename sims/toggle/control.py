"""The Toggle simulator's `/_sim/` control API: reset, faults, config, stats, tokens, credits,
and looking into its books (what a reference created, how many orders it made)."""

from typing import Any

from aiohttp import web

from sims.control_api import Controls, add_shared_routes
from sims.errors import SimError, bad_request
from sims.inputs import read_object
from sims.responses import json_response
from sims.toggle import views
from sims.toggle.endpoint import TOGGLE
from sims.toggle.faults import parse_toggle_fault
from sims.toggle.state import ToggleState
from sims.toggle.stats import ToggleStats


def add_routes(app: web.Application) -> None:
    add_shared_routes(app, CONTROLS)
    app.router.add_post("/_sim/tokens/revoke", expire_tokens)
    app.router.add_post("/_sim/tokens/expire", expire_tokens)
    app.router.add_post("/_sim/tokens/rotate", rotate_tokens)
    app.router.add_post("/_sim/toggle/credits", set_credits)
    app.router.add_get("/_sim/toggle/orders", list_orders)
    app.router.add_get("/_sim/toggle/references/{reference}", reference)
    app.router.add_post("/_sim/toggle/cards", add_card)
    app.router.add_get("/_sim/toggle/cards/{number}", card)


def _sim(request: web.Request) -> ToggleState:
    return request.app[TOGGLE]


def _configure(sim: ToggleState, changes: dict[str, Any]) -> None:
    sim.config = sim.config.updated(changes)
    sim.reconfigure()


def _reset_stats(sim: ToggleState) -> None:
    sim.stats = ToggleStats()


CONTROLS = Controls(
    state=_sim,
    parse_fault=lambda _sim, spec: parse_toggle_fault(spec),
    stats=lambda sim: sim.stats.as_json(sim.credits.available(), sim.faults.pending()),
    reset_stats=_reset_stats,
    config=lambda sim: sim.config.as_json(),
    configure=_configure,
)


async def expire_tokens(request: web.Request) -> web.Response:
    """Every token stops working: the next call answers Unauthorized."""
    _sim(request).tokens.expire_all()
    return json_response({"ok": True})


async def rotate_tokens(request: web.Request) -> web.Response:
    """The next answer to each live token carries a new one in X-Authorization."""
    _sim(request).tokens.rotate_all()
    return json_response({"ok": True})


async def set_credits(request: web.Request) -> web.Response:
    """{"available": n}: the credits left now (refill goes on from there)."""
    sim = _sim(request)
    available = (await read_object(request)).get("available")
    if type(available) not in (int, float) or available < 0:
        raise bad_request("available must be a number >= 0")
    sim.credits.set_available(available)
    return json_response({"available": sim.credits.available(), "maximum": sim.credits.maximum})


async def list_orders(request: web.Request) -> web.Response:
    """Orders, oldest first; `?reference=R` keeps those R created (count them: one per R)."""
    sim = _sim(request)
    wanted = request.query.get("reference")
    found = [order for order in sim.orders.values()
             if wanted is None or order.reference == wanted]
    return json_response({
        "count": len(found),
        "orders": [{**views.order(order), "emails": order.emails} for order in found],
    })


async def reference(request: web.Request) -> web.Response:
    """What a merchant_transaction_reference created: its kind, id and line items."""
    sim = _sim(request)
    ref = request.match_info["reference"]
    claimed = sim.references.get(ref)
    if claimed is None:
        raise SimError(404, "ReferenceNotFound", f"no reference {ref!r}")
    kind, created = claimed
    items = [{**views.line_item(item), "reversed_by": item.reversed_by,
              "reverses": item.reverses} for item in sim.created_by(ref)]
    return json_response({"reference": ref, "kind": kind, "id": created, "line_items": items})


async def add_card(request: web.Request) -> web.Response:
    """{"balance": pence, "number"?, "pin"?, "alias"?, "product_name"?} → the card (with PIN)."""
    sim = _sim(request)
    spec = await read_object(request)
    balance = spec.get("balance")
    if type(balance) is not int or balance < 0:
        raise bad_request("balance must be an integer number of pence >= 0")
    texts = {name: spec.get(name) for name in ("number", "pin", "alias")}
    if not all(value is None or (isinstance(value, str) and value.isdigit())
               for value in texts.values()):
        raise bad_request("number, pin and alias must be strings of digits")
    if texts["number"] is not None and sim.find_card(texts["number"]) is not None:
        raise SimError(409, "CardExists", "a card with that number exists")
    product = spec.get("product_name", "In-store Gift")
    new = sim.add_card(balance, _text(product), number=texts["number"], pin=texts["pin"],
                       alias=texts["alias"])
    return json_response(views.card(new))


async def card(request: web.Request) -> web.Response:
    found = _sim(request).find_card(request.match_info["number"])
    if found is None:
        raise SimError(404, "CardNotFound", "no such card")
    return json_response(views.card(found))


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise bad_request("product_name must be a non-empty string")
    return value
