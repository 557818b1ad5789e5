"""Relay test helpers: Toggle and Nector bodies as the contract shapes them, their
signatures, destinations that record what they were sent and fail as scripted."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import update

from sims.harness import WebProcess, free_port, start_web
from sims.senders import sign_nector, sign_toggle, toggle_event
from tests.support import leases
from worker.base.http import Retryable
from worker.base.signatures import hmac_sha256
from worker.store.database import Store
from worker.store.engine import utcnow
from worker.store.relays import DeliveryRow, Relays, relay_deliveries

TOGGLE_SECRET = "toggle-whsec-7f3a91"
NECTOR_SECRET = "nector-secret-19bd02"


def toggle_body(event_id: int, kind: str = "card.balance_adjusted", *, card: int = 501,
                order: int = 9001, second: int = 0) -> bytes:
    """A Toggle envelope; `second` places its created_at within one minute."""
    created = f"2026-11-21T16:01:{second:02d}.000000Z"
    card_obj = {"object": "card", "id": card, "card_reference": "630119••••6946",
                "balance": 1000, "contact": None,
                "currency": {"iso_currency_code": "GBP", "denomination": 100}}
    if kind.startswith("order."):
        obj: dict[str, Any] = {"object": "order", "id": order, "value": 2500,
                               "account_id": 7, "created_at": created,
                               "merchant_transaction_reference": f"ref-{order}",
                               "receipt_contact": None, "line_items": []}
    elif kind == "card.balance_adjusted":
        obj = {"object": "balance_adjustment", "id": event_id * 10, "value": -500,
               "created_at": created, "merchant_transaction_reference": "m",
               "unit_epos_reference": "u", "card": card_obj}
    else:
        obj = card_obj
    return json.dumps({"id": event_id, "object": "event", "api_version": "3.2",
                       "webhook_version": "1.0", "created_at": created, "type": kind,
                       "data": {"object": obj}}).encode()


def toggle_headers(body: bytes, secret: str = TOGGLE_SECRET) -> dict[str, str]:
    return {"Toggle-Signature": hmac_sha256(secret.encode(), body).hex(),
            "content-type": "application/json"}


def nector_body(customer: str | None = "cust-1", *, email: str = "a@b.in",
                mobile: str = "+919800000000", second: int = 0, **extra: Any) -> bytes:
    fields: dict[str, Any] = {
        "business_name": "Acme", "business_uri": "acme.in", "business_coin_name": "coins",
        "business_currency_code": "INR", "user_customer_id": customer, "user_name": "Asha",
        "user_email": email, "user_mobile": mobile, "user_tier": "gold", "user_type": "c",
        "user_referral_code": "ASHA1", "created_at": f"2026-11-21T16:01:{second:02d}Z",
        "wallet_coin_amount": 50, "wallet_coin_balance": 150, "reward_title": "Review",
        "reward_type": "review", **extra}
    return json.dumps(fields).encode()


def nector_headers(body: bytes, delivery_id: str, topic: str = "walletreward_create", *,
                   secret: str = NECTOR_SECRET, age: float = 0) -> dict[str, str]:
    stamp = str(int(time.time() - age))
    return {"x-nector-topic": topic, "x-nector-delivery-id": delivery_id,
            "x-nector-timestamp": stamp, "x-source": "unix",
            "x-nector-webhook-hmac-algo": "sha256",
            "x-nector-webhook-hmac": hmac_sha256(secret.encode(),
                                                 stamp.encode() + b"." + body).hex(),
            "content-type": "application/json"}


class Script:
    """Failures to raise, in order, before answering normally; records every send."""

    def __init__(self) -> None:
        self.faults: list[Exception] = []
        self.sent: list[Any] = []

    def fail_next(self, *faults: Exception) -> None:
        self.faults.extend(faults)

    def _answer(self, what: Any) -> None:
        self.sent.append(what)
        if self.faults:
            raise self.faults.pop(0)


class FakeAtreemo(Script):
    async def deliver(self, raw_body: bytes) -> None:
        self._answer(raw_body)

    def ids(self) -> list[int]:
        return [json.loads(body)["id"] for body in self.sent]


class FakeContlo(Script):
    async def track(self, event: str, email: str | None, phone: str | None,
                    properties: dict[str, Any], profile_properties: dict[str, Any]) -> None:
        self._answer({"event": event, "email": email, "phone": phone,
                      "properties": properties, "profile_properties": profile_properties})


def server_error() -> Retryable:
    return Retryable("atreemo", "HTTP 503: unavailable", 503)


def make_due(relays: Relays, keys: Iterable[str] | None = None) -> None:
    """Bring planned retries forward to now (what time passing does)."""
    t = relay_deliveries.c
    query = update(relay_deliveries).where(t.next_attempt_at.is_not(None))
    if keys is not None:
        query = query.where(t.key.in_(list(keys)))
    with relays.engine.begin() as conn:
        conn.execute(query.values(next_attempt_at=utcnow() - timedelta(seconds=1)))


def age(relays: Relays, seconds: float) -> None:
    """Make every delivery look `seconds` older (received and last touched)."""
    past = utcnow() - timedelta(seconds=seconds)
    with relays.engine.begin() as conn:
        conn.execute(update(relay_deliveries).values(created_at=past, updated_at=past))


def expire_leases(relays: Relays) -> None:
    """Every held delivery free to be claimed again (deliver.LEASE_SECONDS is no setting)."""
    leases.expire_leases(relays.engine, relay_deliveries)


class RelaySims:
    """The control API of the Atreemo and Contlo simulators (`python -m sims` as a process)."""

    def __init__(self, atreemo_url: str, contlo_url: str) -> None:
        self.urls = {"atreemo": atreemo_url, "contlo": contlo_url}
        self.http = httpx.Client(timeout=30, trust_env=False)

    def _post(self, destination: str, path: str, body: dict[str, Any] | None = None) -> Any:
        answer = self.http.post(f"{self.urls[destination]}/_sim/{path}", json=body or {})
        answer.raise_for_status()
        return answer.json()

    def reset(self) -> None:
        for destination in self.urls:
            self._post(destination, "reset")

    def fault(self, destination: str, **spec: Any) -> None:
        """Queue a fault (kind, count, status, retry_after, body, seconds) for the next
        requests to `destination`."""
        self._post(destination, "faults", spec)

    def configure(self, destination: str, **changes: Any) -> None:
        self._post(destination, "config", changes)

    def stats(self, destination: str) -> dict[str, Any]:
        return dict(self.http.get(f"{self.urls[destination]}/_sim/stats").json())

    def atreemo(self) -> list[dict[str, Any]]:
        """What Atreemo accepted, in arrival order: id, type, event, raw, received_at."""
        return list(self.http.get(f"{self.urls['atreemo']}/_sim/atreemo/deliveries")
                    .json()["items"])

    def atreemo_ids(self) -> list[int]:
        return [int(item["id"]) for item in self.atreemo()]

    def contlo(self) -> list[dict[str, Any]]:
        """What Contlo accepted, in arrival order: event, email, phone_number, properties,
        profile_properties."""
        return list(self.http.get(f"{self.urls['contlo']}/_sim/contlo/events").json()["items"])


# The web process's own required settings (the relays' come from the simulators' env()).
WEB_SETTINGS = {"WEBHOOK_SECRET": "whsec_" + base64.b64encode(b"relay-it" * 4).decode(),
                "WEB_API_KEY": "relay-it-key"}


def start_relay_web(env: dict[str, str], log: Path) -> WebProcess:
    """`python -m worker.faces.web` (what `pointsync web` runs) with both relays on."""
    return start_web({**env, **WEB_SETTINGS, "PORT": str(free_port())}, log)


def card_event(kind: str, card: int, second: int) -> bytes:
    """A Toggle event about card `card`, created `second` seconds into a fixed minute (so
    the source's order is known), its id the sender's next."""
    card_object = {"object": "card", "id": card, "card_reference": "630119••••6946",
                   "balance": 1000, "contact": None,
                   "currency": {"iso_currency_code": "GBP", "denomination": 100}}
    data: dict[str, Any] = card_object
    if kind == "card.balance_adjusted":
        data = {"object": "balance_adjustment", "id": card * 100 + second, "value": -500,
                "merchant_transaction_reference": f"m-{card}-{second}",
                "unit_epos_reference": "u", "card": card_object}
    return toggle_event(kind, data, created_at=f"2026-11-21T16:01:{second:02d}.000000Z")


def event_id(body: bytes) -> int:
    return int(json.loads(body)["id"])


def post_toggle(web: WebProcess, body: bytes) -> httpx.Response:
    """POST a signed Toggle event, waiting no longer than Toggle does (10 s)."""
    return httpx.post(f"{web.url}/webhooks/toggle", content=body, headers=sign_toggle(body),
                      timeout=10, trust_env=False)


def post_nector(web: WebProcess, body: bytes, delivery_id: str) -> httpx.Response:
    return httpx.post(f"{web.url}/webhooks/nector", content=body,
                      headers=sign_nector(body, delivery_id=delivery_id), timeout=10,
                      trust_env=False)


def toggle_key(body: bytes) -> str:
    """The Atreemo delivery of a Toggle event body."""
    return f"toggle:{event_id(body)}:atreemo"


def delivery(store: Store, key: str) -> DeliveryRow:
    found = Relays(store).get(key)
    assert found is not None, key
    return found


def all_final(store: Store, keys: Iterable[str]) -> Callable[[], bool]:
    """For wait_for: every one of these deliveries delivered, filtered or failed."""
    keys = list(keys)
    return lambda: all((found := Relays(store).get(k)) is not None and found.final
                       for k in keys)


def accepted(web: WebProcess, body: bytes) -> dict[str, Any]:
    """POST a Toggle event that must be answered 200; its answer."""
    answer = post_toggle(web, body)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def about_card(items: list[dict[str, Any]], card: int) -> list[int]:
    """The ids of what Atreemo accepted about `card` (card_event's shapes), in arrival
    order."""
    def card_of(event: dict[str, Any]) -> Any:
        obj = event["data"]["object"]
        return obj["id"] if obj["object"] == "card" else obj["card"]["id"]
    return [int(item["id"]) for item in items if card_of(item["event"]) == card]
