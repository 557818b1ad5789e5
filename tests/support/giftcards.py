"""A Toggle stand-in for gift-card flow tests (respx side effect): keeps orders by reference
as Toggle does (a second createOrder with one is `Duplicate reference supplied`), answers
LineItems from them, and can lose an answer before or after applying the order."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from pydantic import SecretStr

from tests.support.flows import FakeRemotes, Parts
from worker.flows.parts import Parts as FlowParts
from worker.store.pushguard import PushGuard
from worker.systems.toggle.client import ToggleClient
from worker.systems.toggle.session import ToggleSession
from worker.systems.toggle.throttle import CreditBucket

TOGGLE_URL = "https://api.mytoggle.test/graphql"
_OPERATION = re.compile(r"(?:query|mutation)\s+(\w+)")


def answer(data: dict[str, Any] | None = None, errors: list[dict[str, Any]] | None = None,
           **headers: str) -> httpx.Response:
    body: dict[str, Any] = {"data": data, "extensions": {"cost": {"throttleStatus": {
        "maximumAvailable": 8000, "currentlyAvailable": 7000}}}}
    if errors:
        body["errors"] = errors
    return httpx.Response(200, json=body, headers=headers)


@dataclass
class FakeToggle:
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)  # by reference
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # What the next createOrder calls meet, in turn: "lose_before" (dropped, not applied),
    # "lose_after" (applied, then the answer lost), or a refusal message.
    faults: list[str] = field(default_factory=list)
    lookup_down: int = 0  # LineItems answers 503 this many times
    next_number: int = 6301190000000020001
    pins: list[str] = field(default_factory=list)

    def named(self, operation: str) -> list[dict[str, Any]]:
        return [variables for name, variables in self.calls if name == operation]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        match = _OPERATION.search(body["query"])
        assert match, body["query"]
        operation, variables = match.group(1), body["variables"]
        self.calls.append((operation, variables))
        if operation == "Login":
            return answer({"loginUser": {"id": 17}}, **{"X-Authorization": "Bearer jwt-1"})
        if operation == "CreateOrder":
            return self._create(variables)
        if operation == "LineItems":
            if self.lookup_down:
                self.lookup_down -= 1
                return httpx.Response(503, text="unavailable")
            order = self.orders.get(variables["merchant_transaction_reference"])
            items = [] if order is None else [{
                "id": item["id"], "value": item["value"],
                "Card": {"card_reference": item["Card"]["card_reference"],
                         "balance": item["Card"]["balance"]}} for item in order["LineItems"]]
            return answer({"LineItems": {"data": items}})
        raise AssertionError(f"unexpected operation {operation}")

    def _create(self, variables: dict[str, Any]) -> httpx.Response:
        fault = self.faults.pop(0) if self.faults else None
        if fault == "lose_before":
            raise httpx.ReadTimeout("answer lost")
        if fault is not None and fault != "lose_after":
            return answer(None, [{"message": fault, "customer_facing": True}])
        reference = variables["merchant_transaction_reference"]
        if reference in self.orders:
            return answer(None, [{"message": "Duplicate reference supplied",
                                  "customer_facing": False}])
        item = variables["order_items"][0]
        number = str(self.next_number)
        self.next_number += 1
        pin = f"{len(self.orders) + 4711:04d}"
        self.pins.append(pin)
        order = {"id": 500 + len(self.orders), "LineItems": [{
            "id": 9000 + len(self.orders), "value": item["custom_price_modifier_value"],
            "Card": {"id": 70 + len(self.orders), "card_reference": number, "pin": pin,
                     "balance": item["custom_price_modifier_value"],
                     "expiry_time": "2027-12-02T00:00:00Z",
                     "card_alias_card_reference": None, "product_name": "In-store Gift"}}]}
        self.orders[reference] = order
        if fault == "lose_after":
            raise httpx.ReadTimeout("answer lost after the order was made")
        return answer({"createOrder": order})


@dataclass
class FakeTreazureAccount:
    """One Treazure account's bookings (respx side effects): a balance in cents, 422 for a
    redemption larger than it, and the history the ledger reads to date a booking."""

    balance_cents: int
    bookings: list[dict[str, Any]] = field(default_factory=list)
    down: int = 0  # the next bookings answer 503 (and book nothing)

    def book(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            self.down -= 1
            return httpx.Response(503, text="unavailable")
        body = orjson.loads(request.content)
        program = body["loyaltyPrograms"][0]
        sign = 1 if "loads" in program else -1
        entries = program.get("loads") or program.get("redemptions")
        cents = sign * round(float(entries[0]["value"]) * 100)
        if self.balance_cents + cents < 0:
            return httpx.Response(422, json={"error": "InsufficientBalance"})
        self.balance_cents += cents
        self.bookings.append({"receiptNr": body["context"]["receiptNr"], "cents": cents,
                              "comment": body["context"]["comment"],
                              "balance": self.balance_cents})
        return httpx.Response(200, json={"loyaltyPrograms": [
            {"loyaltyPointDefinitionId": "points", "balance": self.balance_cents / 100}]})

    def history(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=[{
            "receiptNr": b["receiptNr"], "balance": b["balance"] / 100,
            "dateTime": f"2026-12-02T08:00:{i:02d}+00:00", "value": abs(b["cents"]) / 100,
            "type": "Load" if b["cents"] > 0 else "Redemption"}
            for i, b in enumerate(self.bookings)])


@asynccontextmanager
async def toggle_parts(parts: Parts, remotes: FakeRemotes,
                       fake: FakeToggle) -> AsyncIterator[FlowParts]:
    """The flow's parts with a Toggle client answered by `fake`."""
    settings = parts.settings.model_copy(update={
        "TOGGLE_API_URL": TOGGLE_URL, "TOGGLE_USERNAME": "api-user",
        "TOGGLE_PASSWORD": SecretStr("tg-Pa55-9911"), "TOGGLE_ACCOUNT_ID": 412,
        "TOGGLE_PRODUCT_ID": 4, "POINTS_INLINE_ATTEMPTS": 1, "POINTS_SETTLE_SECONDS": 0.0,
        "TOGGLE_SITES": {"london": "EPOS-LDN-1"}})
    remotes.forget[0].post(TOGGLE_URL).mock(side_effect=fake)
    bucket = CreditBucket(parts.redis, "pointsync:toggle:credits:test")
    session = ToggleSession(settings, parts.redis, httpx.AsyncClient(), bucket=bucket)
    toggle = ToggleClient(settings, parts.redis, session=session)
    async with toggle:
        yield FlowParts(settings, parts.store, parts.redis, parts.treazure, parts.engage,
                        PushGuard(parts.redis, claim_ttl_seconds=60, marker_ttl_seconds=600),
                        toggle)
