"""The demo's gift cards: issue a card, turn points into a card and redeem at a site, each
through the broker against the Toggle simulator, each sent twice with one reference; then
a table of the outcomes (card numbers masked) and a check in the simulators' books."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import httpx
from celery import Celery
from rich import box
from rich.console import Console
from rich.table import Table

from sims.guids import seeded_ids

CARD_REF, POINTS_REF, TILL_REF = "demo-card", "demo-points-card", "demo-till"
POINTS, POINTS_VALUE = "100", "10.00"


def gift_cards(console: Console, client: Celery, sims: Any, timeout: float) -> bool:
    """True when each operation ended as it should and the books agree."""
    toggle = httpx.Client(base_url=sims.toggle, timeout=30)
    treazure = httpx.Client(base_url=sims.treazure, timeout=30)
    try:
        return _run(console, client, toggle, treazure, timeout)
    finally:
        toggle.close()
        treazure.close()


def _run(console: Console, client: Celery, toggle: httpx.Client, treazure: httpx.Client,
         timeout: float) -> bool:
    def call(task: str, **kwargs: Any) -> dict[str, Any]:
        return dict(client.send_task(f"pointsync.{task}", kwargs=kwargs).get(timeout=timeout))

    console.print("gift cards through Toggle: issue, points → card, redeem at a site …")
    card = {"value": "25.00", "reference": CARD_REF, "message": "Thank you"}
    issued = [call("issue_gift_card", **card) for _ in range(2)]  # the same reference twice

    contact = _contact_with_points(treazure)
    history_before = _history(treazure, contact)
    redeem = {"contact_id": contact, "points": POINTS, "value": POINTS_VALUE,
              "email": "guest@example.com", "reference": POINTS_REF}
    redeemed = _until_final(lambda: call("redeem_points_for_gift_card", **redeem))

    # The in-venue card's full number, from the simulator's books (our results mask it).
    (order,) = toggle.get("/_sim/toggle/orders", params={"reference": CARD_REF}).json()["orders"]
    number = order["LineItems"][0]["Card"]["card_reference"]
    till = {"card_reference": number, "value": "-5.00", "site": "london",
            "reference": TILL_REF}
    adjusted = [call("adjust_gift_card", **till) for _ in range(2)]

    console.print(_table(issued[-1], redeemed, adjusted[-1]))
    for line in _details(issued[-1], redeemed, adjusted[-1]):
        console.print(line)
    for outcome in (issued[-1], redeemed, adjusted[-1]):
        if outcome.get("reason"):
            console.print(f"  {outcome['reference']}: {outcome['reason']}")

    orders = [_count_orders(toggle, ref) for ref in (CARD_REF, POINTS_REF)]
    made = toggle.get(f"/_sim/toggle/references/{TILL_REF}").json()
    bookings = _history(treazure, contact) - history_before
    ok = (
        all(o["state"] == "issued" for o in issued) and redeemed["state"] == "done"
        and all(a["state"] == "applied" for a in adjusted)
        and adjusted[-1]["balance"] == "20.00"
        and orders == [1, 1] and len(made.get("line_items", [])) == 1 and bookings == 1
    )
    verdict = "[green]OK[/green]" if ok else "[red]UNEXPECTED[/red]"
    console.print(
        f"check: one Toggle order per reference ({CARD_REF}: {orders[0]}, {POINTS_REF}: "
        f"{orders[1]}), one adjustment under {TILL_REF} ({len(made.get('line_items', []))}), "
        f"the redemption's points booked once in Treazure ({bookings}) — {verdict}")
    return ok


def _table(issued: dict[str, Any], redeemed: dict[str, Any],
           adjusted: dict[str, Any]) -> Table:
    # No vertical rules: the masked number fits whole on an 80-column terminal.
    table = Table(title="gift cards (each sent twice with one reference; numbers masked)",
                  box=box.SIMPLE_HEAD)
    for column in ("operation", "reference", "state", "card", "value"):
        table.add_column(column, no_wrap=column == "card")
    for operation, outcome in (("issue", issued), ("points→card", redeemed),
                               ("redeem", adjusted)):
        table.add_row(operation, outcome["reference"], outcome["state"],
                      outcome.get("card_number") or "", outcome.get("value") or "")
    return table


def _details(issued: dict[str, Any], redeemed: dict[str, Any],
             adjusted: dict[str, Any]) -> list[str]:
    return [
        f"  {issued['reference']}: in venue (no email), Toggle order {issued.get('order_id')}",
        f"  {redeemed['reference']}: {redeemed['points']} points of contact "
        f"{redeemed['contact_id']}, card emailed by Toggle",
        f"  {adjusted['reference']}: at {adjusted['site']} on the card issued above, "
        f"balance after {adjusted.get('balance')}",
    ]


def _until_final(send: Any, seconds: float = 90) -> dict[str, Any]:
    """The saga ends `done` once its points reach Engage (the drain): the same call again
    answers with the recorded state, so it is asked until final or out of time."""
    deadline = time.monotonic() + seconds
    outcome: dict[str, Any] = send()
    while outcome["state"] not in ("done", "refunded", "failed") and time.monotonic() < deadline:
        time.sleep(0.5)
        outcome = send()
    return outcome


def _contact_with_points(treazure: httpx.Client) -> str:
    """A seeded contact the demo has not booked for, with the points to spend."""
    for contact in seeded_ids(3, 20):
        balance = treazure.get(f"/_sim/treazure/account/{contact}").json().get("balance")
        if balance is not None and Decimal(str(balance)) >= Decimal(POINTS):
            return contact
    raise RuntimeError("no seeded contact has the points for the demo's gift card")


def _history(treazure: httpx.Client, contact: str) -> int:
    return int(treazure.get(f"/_sim/treazure/account/{contact}").json()["history_length"])


def _count_orders(toggle: httpx.Client, reference: str) -> int:
    answer = toggle.get("/_sim/toggle/orders", params={"reference": reference})
    return int(answer.json()["count"])
