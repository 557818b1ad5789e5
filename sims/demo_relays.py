"""The demo's relays: the web process with both relays on, a handful of signed Toggle and
Nector webhooks (one arriving before an earlier event of its card, one sent twice, one
email-trigger event, one Nector customer with neither email nor phone), then where each
delivery ended and what the Atreemo and Contlo simulators received, in order, and a check.

Atreemo answers its first request 429 with `Retry-After: 3`: the card's later event, which
arrived first, waits 3 s (long enough on a busy machine), and the earlier one, arriving
meanwhile, goes out before it (the subject's order is the source's creation order, not the
arrival order).
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from rich import box
from rich.console import Console
from rich.table import Table

from sims.harness import WebProcess, free_port, start_web
from sims.relays import atreemo, contlo
from sims.senders import nector_event, sign_nector, sign_toggle, toggle_event
from worker.faces.runtime import prepare_store
from worker.store.relays import DeliveryRow, Relays, delivery_key

CARD, ORDER = 7001, 9101
RETRY_AFTER = "3"  # seconds Atreemo's simulator asks the first delivery to wait
# The web process's own two settings (the relays' come from the simulators' env()).
WEB_SETTINGS = {"WEBHOOK_SECRET": "whsec_" + base64.b64encode(b"pointsync-demo-web!!" * 2)
                .decode(), "WEB_API_KEY": "demo-web-key"}


@dataclass
class Sent:
    """One event as the demo sent it, and where its delivery ended."""

    label: str
    source: str  # toggle | nector
    event_id: str
    topic: str
    note: str
    answers: list[int] = field(default_factory=list)  # the web process's HTTP status, per post
    duplicate: bool = False  # the last post was answered as a repeat
    row: DeliveryRow | None = None

    @property
    def destination(self) -> str:
        return "atreemo" if self.source == "toggle" else "contlo"

    @property
    def key(self) -> str:
        return delivery_key(self.source, self.event_id, self.destination)

    @property
    def state(self) -> str:
        return self.row.state if self.row else "not recorded"


@dataclass
class RelayDemo:
    sent: list[Sent]
    atreemo: list[dict[str, Any]]  # what the Atreemo simulator accepted, in arrival order
    contlo: list[dict[str, Any]]  # what the Contlo simulator accepted, in arrival order
    settled: bool  # every delivery ended before the time ran out
    ok: bool = False

    def by_label(self) -> dict[str, Sent]:
        return {s.label: s for s in self.sent}


def start_relay_web(env: dict[str, str], root: Path) -> WebProcess:
    """The web process with the worker's settings `env` (the relays on)."""
    return start_web({**env, **WEB_SETTINGS, "PORT": str(free_port())}, root / "web.log")


def relays(console: Console, sims: Any, env: dict[str, str], root: Path,
           web: WebProcess | None = None, timeout: float = 60) -> RelayDemo:
    """Send the events to `web` (started here and stopped after when None), wait until
    each delivery ended (at most `timeout` s), print and check the outcome."""
    console.print("event relays: Toggle → Atreemo, Nector → Contlo, through the web process …")
    own = web is None
    process = web or start_relay_web(env, root)
    http = httpx.Client(timeout=30, trust_env=False)
    try:
        demo = _run(http, process, sims, env, timeout)
    finally:
        http.close()
        if own:
            process.stop()
    _print(console, demo)
    return demo


def _run(http: httpx.Client, web: WebProcess, sims: Any, env: dict[str, str],
         timeout: float) -> RelayDemo:
    for url in (sims.atreemo, sims.contlo):
        http.post(f"{url}/_sim/reset").raise_for_status()
    # Atreemo's first answer is a 429: the first delivery (the card's later event) waits.
    http.post(f"{sims.atreemo}/_sim/faults", json={
        "kind": "status", "status": 429, "retry_after": RETRY_AFTER, "count": 1,
    }).raise_for_status()
    base = datetime.now(UTC) - timedelta(seconds=30)
    sent: list[Sent] = []

    def at(second: int) -> datetime:  # the source's creation times, a second apart
        return base + timedelta(seconds=second)

    def toggle(label: str, kind: str, obj: dict[str, Any], second: int, note: str,
               times: int = 1) -> Sent:
        body = toggle_event(kind, obj, created_at=at(second))
        event = Sent(label, "toggle", str(_event_id(body)), kind, note)
        for _ in range(times):
            _post(http, f"{web.url}/webhooks/toggle", body, sign_toggle(body), event)
        sent.append(event)
        return event

    def nector(label: str, topic: str, second: int, note: str, **fields: Any) -> Sent:
        body = nector_event(topic, created_at=at(second).isoformat(timespec="seconds"),
                            **fields)
        event = Sent(label, "nector", f"demo-{uuid.uuid4().hex[:12]}", topic, note)
        _post(http, f"{web.url}/webhooks/nector", body,
              sign_nector(body, delivery_id=event.event_id), event)
        sent.append(event)
        return event

    toggle("card, later", "card.balance_adjusted", _adjustment(2, -500, 1500), 2,
           f"sent first; Atreemo answered 429 (Retry-After {RETRY_AFTER} s), so it went "
           "after the earlier one")
    # The earlier event is sent once Atreemo has refused the later one: it overtakes it.
    _wait(lambda: _answers(http, sims.atreemo).get("429", 0) >= 1, 30)
    toggle("card, earlier", "card.balance_adjusted", _adjustment(1, -500, 2000), 1,
           "sent second, created first: delivered first")
    toggle("order", "order.created", _order(), 3, "sent twice: the repeat recorded nothing",
           times=2)
    toggle("receipt email", "order.send_receipt_email", _order(), 4,
           "an email trigger: Toggle sends this email (ATREEMO_SENDS_EMAILS off)")
    nector("coins", "walletreward_create", 5, "Wallet Coins Rewarded for the customer")
    nector("coupon", "coupon_create", 6, "Coupon Is Created, after the coins")
    nector("no contact", "walletreward_create", 7, "", user_customer_id="cust-2002",
           user_name="No Contact", user_email="", user_mobile="")

    store = Relays(prepare_store(env["DATABASE_URL"]))
    settled = _wait(lambda: _settle(store, sent), timeout)
    demo = RelayDemo(sent, _records(http, f"{sims.atreemo}{atreemo.DELIVERIES}"),
                     _records(http, f"{sims.contlo}{contlo.EVENTS}"), settled)
    demo.ok = _check(demo)
    return demo


def _adjustment(number: int, value: int, balance: int) -> dict[str, Any]:
    """Toggle's `card.balance_adjusted` object: the card's balance after it, in pence."""
    return {"object": "balance_adjustment", "id": CARD * 10 + number, "value": value,
            "merchant_transaction_reference": f"demo-till-{number}",
            "unit_epos_reference": "EPOS-LDN-1",
            "card": {"object": "card", "id": CARD, "card_reference": "6301190000000007001",
                     "balance": balance, "contact": None,
                     "currency": {"iso_currency_code": "GBP", "denomination": 100}}}


def _order() -> dict[str, Any]:
    return {"object": "order", "id": ORDER, "value": 2500, "account_id": 1001,
            "merchant_transaction_reference": "demo-order",
            "receipt_contact": {"email": "guest@example.com", "first_name": "Sam",
                                "last_name": "Guest"}, "line_items": []}


def _event_id(body: bytes) -> Any:
    return orjson.loads(body)["id"]


def _post(http: httpx.Client, url: str, body: bytes, headers: dict[str, str],
          event: Sent) -> None:
    answer = http.post(url, content=body, headers=headers)
    event.answers.append(answer.status_code)
    event.duplicate = answer.status_code == 200 and bool(answer.json().get("duplicate"))


def _answers(http: httpx.Client, url: str) -> dict[str, int]:
    return dict(http.get(f"{url}/_sim/stats").json()["answers"])


def _records(http: httpx.Client, url: str) -> list[dict[str, Any]]:
    return list(http.get(url).json()["items"])


def _settle(store: Relays, sent: list[Sent]) -> bool:
    """Read each delivery's row; True once every one has ended."""
    for event in sent:
        event.row = store.get(event.key)
    return all(event.row is not None and event.row.final for event in sent)


def _wait(done: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _check(demo: RelayDemo) -> bool:
    """Each event ended as it should, and each destination got what it should, in order."""
    by = demo.by_label()
    states = {label: event.state for label, event in by.items()}
    wanted = {"card, later": "delivered", "card, earlier": "delivered", "order": "delivered",
              "receipt email": "filtered", "coins": "delivered", "coupon": "delivered",
              "no contact": "failed"}
    later = by["card, later"].row
    atreemo_ids = [str(item["id"]) for item in demo.atreemo]
    contlo_events = [(item["event"], item["email"]) for item in demo.contlo]
    email = "asha@example.in"  # the signed sender's customer
    return (
        demo.settled and states == wanted
        and all(answer == 200 for event in demo.sent for answer in event.answers)
        and by["order"].answers == [200, 200] and by["order"].duplicate
        and later is not None and later.attempts >= 2
        # Per subject in creation order; subjects are independent, so the order interleaves.
        and [i for i in atreemo_ids if i != by["order"].event_id]
        == [by["card, earlier"].event_id, by["card, later"].event_id]
        and atreemo_ids.count(by["order"].event_id) == 1 and len(atreemo_ids) == 3
        and contlo_events == [("Wallet Coins Rewarded", email), ("Coupon Is Created", email)]
    )


def _print(console: Console, demo: RelayDemo) -> None:
    table = Table(title="relayed events (where each ended)", box=box.SIMPLE_HEAD)
    for column in ("event", "type / topic", "to", "state", "tries"):
        table.add_column(column)
    for event in demo.sent:
        row = event.row
        table.add_row(event.label, event.topic, event.destination, event.state,
                      str(row.attempts) if row else "")
    console.print(table)
    for event in demo.sent:
        reason = event.row.reason if event.row and event.state == "failed" else None
        if event.note or reason:
            console.print(f"  {event.label}: {reason or event.note}")
    console.print("what Atreemo received, in order:")
    labels = {event.event_id: event.label for event in demo.sent}
    for item in demo.atreemo:
        console.print(f"  {item['seq']}. {item['type']} (Toggle event {item['id']}: "
                      f"{labels.get(str(item['id']), '?')})")
    console.print("what Contlo received, in order:")
    for item in demo.contlo:
        console.print(f"  {item['seq']}. {item['event']} for {item['email']}")
    verdict = "[green]OK[/green]" if demo.ok else "[red]UNEXPECTED[/red]"
    waited = "" if demo.settled else " (not all ended in time)"
    console.print(
        f"check: the card's events reached Atreemo in the order Toggle created them, the "
        f"order once, the receipt email not at all; Contlo got the coins then the coupon, "
        f"and nothing for the customer without email or phone{waited} — {verdict}")
