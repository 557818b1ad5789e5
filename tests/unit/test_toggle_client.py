"""Toggle client against a respx stand-in: the shared token, re-login, the throttle, each
refusal verbatim, duplicate references, lost answers, and PINs kept out of sight."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import fakeredis
import httpx
import orjson
import pytest
import respx

from tests.support.unit import mocked_http
from worker.base.http import Retryable
from worker.systems.toggle.client import ToggleClient
from worker.systems.toggle.errors import (
    AnswerLost,
    DuplicateReference,
    ToggleRefused,
    ToggleUnauthorized,
)
from worker.systems.toggle.session import ToggleSession
from worker.systems.toggle.throttle import REFILL_PER_SECOND, CreditBucket

URL = "https://api.mytoggle.test/graphql"
USER = {"TOGGLE_API_URL": URL, "TOGGLE_USERNAME": "api-user",
        "TOGGLE_PASSWORD": "tg-Pa55-9911", "TOGGLE_ACCOUNT_ID": "412"}
NUMBER = "6301190012345676946"
PIN = "8264"
_OPERATION = re.compile(r"(?:query|mutation)\s+(\w+)")

Answer = httpx.Response | Exception


def ok(data: dict[str, Any], available: int = 7000, **headers: str) -> httpx.Response:
    cost = {"throttleStatus": {"maximumAvailable": 8000, "currentlyAvailable": available}}
    return httpx.Response(200, json={"data": data, "extensions": {"cost": cost}},
                          headers=headers)


def error(message: str, status: int = 200, available: int = 7000,
          **extra: Any) -> httpx.Response:
    cost = {"throttleStatus": {"maximumAvailable": 8000, "currentlyAvailable": available}}
    return httpx.Response(status, json={"errors": [{"message": message, **extra}],
                                        "data": None, "extensions": {"cost": cost}})


ISSUED = {"createOrder": {"id": 501, "LineItems": [{"id": 9001, "Card": {
    "id": 77, "card_reference": NUMBER, "pin": PIN, "balance": 2500,
    "expiry_time": "2027-11-21T00:00:00Z", "card_alias_card_reference": None,
    "product_name": "In-store Gift"}}]}}
DEFAULTS: dict[str, Callable[[], httpx.Response]] = {
    "Products": lambda: ok({"Products": [{"id": 3, "name": "Digital"},
                                         {"id": 4, "name": "In-store Gift"}]}),
    "Cards": lambda: ok({"Cards": {"data": [{"id": 77, "card_reference": NUMBER,
                                             "balance": 1250, "initial_balance": 2500,
                                             "expiry_time": None,
                                             "card_alias_card_reference": None,
                                             "product_name": "In-store Gift"}], "total": 1}}),
    "CreateOrder": lambda: ok(ISSUED),
    "CreateBalanceAdjustment": lambda: ok({"createBalanceAdjustment": {
        "id": 610, "value": -500, "LineItem": {"id": 9002, "Card": {
            "card_reference": NUMBER, "balance": 750}},
        "ValueSplit": {"tender": -500, "discount": 0}}}),
    "CreateReversal": lambda: ok({"createReversal": {"id": 611, "value": 500}}),
    "LineItems": lambda: ok({"LineItems": {"data": []}}),
    "Orders": lambda: ok({"Orders": {"data": [], "total": 0, "per_page": 10,
                                     "current_page": 1}}),
}


class FakeToggle:
    """Answers each operation from its queue, else a default; records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], str | None]] = []
        self.queued: dict[str, list[Answer]] = {}
        self.logins = 0

    def queue(self, operation: str, *answers: Answer) -> None:
        self.queued.setdefault(operation, []).extend(answers)

    def named(self, operation: str) -> list[tuple[str, dict[str, Any], str | None]]:
        return [call for call in self.calls if call[0] == operation]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        match = _OPERATION.search(body["query"])
        assert match, body["query"]
        operation = match.group(1)
        self.calls.append((operation, body["variables"], request.headers.get("Authorization")))
        if self.queued.get(operation):
            answer = self.queued[operation].pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer
        if operation == "Login":
            self.logins += 1
            token = f"Bearer jwt-{self.logins}"
            return ok({"loginUser": {"id": 17}}, **{"X-Authorization": token,
                                                    "Authorization": token})
        return DEFAULTS[operation]()


@pytest.fixture
def toggle() -> FakeToggle:
    return FakeToggle()


@pytest.fixture
def settings(make_settings):
    return make_settings(**USER)


@pytest.fixture
def connect(settings, toggle) -> Callable[..., ToggleClient]:
    """A client (a process) on the given Redis, answered by the fake Toggle."""

    def make(redis: Any, clock: Callable[[], int] | None = None) -> ToggleClient:
        router = respx.Router(assert_all_called=False)
        router.post(URL).mock(side_effect=toggle)
        http = mocked_http(router, URL)
        bucket = CreditBucket(redis, "pointsync:toggle:credits:test", clock_us=clock)
        return ToggleClient(settings, redis,
                            session=ToggleSession(settings, redis, http, bucket=bucket))

    return make


@pytest.fixture
def client(connect, redis) -> ToggleClient:
    return connect(redis)


# -- the token ---------------------------------------------------------------------------


async def test_the_login_token_comes_from_the_headers_and_is_shared(
        connect, redis_server, toggle) -> None:
    first = connect(fakeredis.FakeAsyncRedis(server=redis_server))
    second = connect(fakeredis.FakeAsyncRedis(server=redis_server))

    await first.card_balance(NUMBER)
    await second.card_balance(NUMBER)

    assert [call[0] for call in toggle.calls] == ["Login", "Cards", "Cards"]
    assert toggle.calls[0][1] == {"username": "api-user", "password": "tg-Pa55-9911"}
    assert toggle.calls[0][2] is None
    assert [call[2] for call in toggle.named("Cards")] == ["Bearer jwt-1"] * 2
    assert (await first.token.current()).startswith("jwt-1")
    assert first.token.key.startswith("pointsync:toggle:")


async def test_a_new_token_in_any_answer_is_used_from_then_on(
        connect, redis_server, toggle) -> None:
    first = connect(fakeredis.FakeAsyncRedis(server=redis_server))
    second = connect(fakeredis.FakeAsyncRedis(server=redis_server))
    await first.card_balance(NUMBER)
    toggle.queue("Cards", ok(orjson.loads(DEFAULTS["Cards"]().content)["data"],
                             **{"X-Authorization": "Bearer jwt-slid"}))

    await first.card_balance(NUMBER)
    await second.card_balance(NUMBER)

    assert [call[2] for call in toggle.named("Cards")] == [
        "Bearer jwt-1", "Bearer jwt-1", "Bearer jwt-slid"]
    assert toggle.logins == 1


@pytest.mark.parametrize("unauthorized", [
    lambda: error("Unauthorized", customer_facing=False),
    lambda: httpx.Response(401, text="Unauthorized"),
])
async def test_unauthorized_logs_in_once_more(client, toggle, unauthorized) -> None:
    await client.card_balance(NUMBER)
    toggle.queue("Cards", unauthorized())

    card = await client.card_balance(NUMBER)

    assert card is not None and card.balance_minor == 1250
    assert toggle.logins == 2
    assert [call[2] for call in toggle.named("Cards")] == [
        "Bearer jwt-1", "Bearer jwt-1", "Bearer jwt-2"]


async def test_unauthorized_again_after_the_new_login_fails(client, toggle) -> None:
    toggle.queue("Cards", error("Unauthorized"), error("Unauthorized"))

    with pytest.raises(ToggleUnauthorized):
        await client.card_balance(NUMBER)

    assert toggle.logins == 2
    assert len(toggle.named("Cards")) == 2


async def test_a_token_is_dropped_only_while_it_is_still_the_failing_one(client) -> None:
    await client.token.switch("jwt-fresh")

    assert not await client.token.drop("jwt-old")
    assert await client.token.current() == "jwt-fresh"
    assert await client.token.drop("jwt-fresh")
    assert await client.token.current() is None


async def test_wrong_credentials_are_refused_verbatim(client, toggle) -> None:
    toggle.queue("Login", error("Invalid credentials", customer_facing=True))

    with pytest.raises(ToggleRefused) as raised:
        await client.card_balance(NUMBER)

    assert raised.value.message == "Invalid credentials"
    assert toggle.named("Cards") == []


# -- the throttle ------------------------------------------------------------------------


class FixedClock:
    def __call__(self) -> int:
        return 1_700_000_000_000_000


async def test_the_bucket_follows_the_servers_figure(connect, redis, toggle) -> None:
    client = connect(redis, FixedClock())
    toggle.queue("Cards", ok(orjson.loads(DEFAULTS["Cards"]().content)["data"], available=42))

    await client.card_balance(NUMBER)

    assert await client.credits() == pytest.approx(42)


async def test_a_request_waits_for_its_credits_before_it_is_sent(
        connect, redis, toggle, sleeps) -> None:
    client = connect(redis, FixedClock())
    await client.in_store_gift_product_id()
    toggle.queue("Cards", ok(orjson.loads(DEFAULTS["Cards"]().content)["data"], available=5))
    await client.card_balance(NUMBER)

    await client.create_order(2500, "ref-1")

    # createOrder costs 20 and 5 are left: it waits for 15 at the refill rate.
    assert sleeps.delays == [pytest.approx(15 / REFILL_PER_SECOND)]
    assert len(toggle.named("CreateOrder")) == 1


async def test_throttled_waits_for_the_missing_credits_and_retries(
        connect, redis, toggle, sleeps) -> None:
    client = connect(redis, FixedClock())
    await client.in_store_gift_product_id()
    toggle.queue("CreateOrder", error("Throttled", status=429, available=8))

    order = await client.create_order(2500, "ref-1")

    assert order.id == 501
    assert len(toggle.named("CreateOrder")) == 2
    assert sleeps.delays == [pytest.approx((20 - 8) / REFILL_PER_SECOND)]


# -- refusals and faults -----------------------------------------------------------------

REFUSALS = [
    "Applying this transaction would have resulted in a negative balance. "
    "Transaction not applied.",
    "No card has been found for this account for the card ref supplied. "
    "Transaction not applied.",
    "The external_site_id supplied was not recognised for this account.",
]


@pytest.mark.parametrize("message", REFUSALS)
async def test_each_refusal_is_shown_verbatim_and_not_retried(client, toggle, message) -> None:
    toggle.queue("CreateBalanceAdjustment", error(message, customer_facing=True))

    with pytest.raises(ToggleRefused) as raised:
        await client.adjust(NUMBER, -500, "SITE-001", "till-1")

    assert raised.value.message == message
    assert raised.value.reason == message
    assert not isinstance(raised.value, DuplicateReference)
    assert len(toggle.named("CreateBalanceAdjustment")) == 1


async def test_a_validation_refusal_carries_its_map(client, toggle) -> None:
    toggle.queue("CreateOrder", error("validation", validation={
        "order_items.0.fulfilment_email": ["The fulfilment email must be a valid email."]}))

    with pytest.raises(ToggleRefused) as raised:
        await client.create_order(2500, "ref-1", email="not-an-email")

    assert raised.value.message == "validation"
    assert raised.value.validation == {
        "order_items.0.fulfilment_email": ["The fulfilment email must be a valid email."]}
    assert "The fulfilment email must be a valid email." in str(raised.value)


async def test_a_duplicate_reference_has_its_own_class(client, toggle) -> None:
    toggle.queue("CreateOrder", error("Duplicate reference supplied"))

    with pytest.raises(DuplicateReference) as raised:
        await client.create_order(2500, "ref-1")

    assert raised.value.message == "Duplicate reference supplied"
    assert len(toggle.named("CreateOrder")) == 1


@pytest.mark.parametrize("lost", [
    lambda: httpx.ReadTimeout("slow"),
    lambda: httpx.RemoteProtocolError("reset"),
    lambda: httpx.Response(502, text="<html>Bad gateway</html>"),
    lambda: httpx.Response(200, text="<html>proxy</html>"),
])
async def test_a_mutation_whose_answer_is_lost_is_not_sent_again(client, toggle, lost) -> None:
    toggle.queue("CreateOrder", lost())

    with pytest.raises(AnswerLost) as raised:
        await client.create_order(2500, "ref-1")

    assert raised.value.reference == "ref-1"
    assert len(toggle.named("CreateOrder")) == 1


async def test_a_mutation_that_never_left_is_sent_again(client, toggle) -> None:
    toggle.queue("CreateReversal", httpx.ConnectError("refused"))

    reversal = await client.reverse("till-1", 9002, "SITE-001")

    assert reversal.id == 611
    assert len(toggle.named("CreateReversal")) == 2


@pytest.mark.parametrize("fault", [
    lambda: httpx.Response(503, text="busy"),
    lambda: httpx.ReadTimeout("slow"),
    lambda: httpx.ConnectError("refused"),
])
async def test_a_query_is_retried_after_a_transport_fault(client, toggle, fault) -> None:
    toggle.queue("Cards", fault())

    card = await client.card_balance(NUMBER)

    assert card is not None and card.balance_minor == 1250
    assert len(toggle.named("Cards")) == 2


async def test_a_query_gives_up_after_the_attempts(client, toggle) -> None:
    toggle.queue("Cards", *(httpx.Response(503) for _ in range(4)))

    with pytest.raises(Retryable):
        await client.card_balance(NUMBER)

    assert len(toggle.named("Cards")) == 4  # HTTP_MAX_ATTEMPTS of the unit settings


# -- the calls ---------------------------------------------------------------------------


async def test_a_gift_card_order_is_free_to_the_guest(client, toggle) -> None:
    await client.create_order(2500, "ref-1", email="guest@example.com", message="Thanks!",
                              note="kiosk 4")
    await client.create_order(1000, "ref-2")

    emailed, in_venue = (call[1] for call in toggle.named("CreateOrder"))
    assert len(toggle.named("Products")) == 1  # `In-store Gift` looked up once
    assert {k: v for k, v in emailed.items() if k != "order_items"} == {
        "account_id": 412, "currency": "GBP", "merchant_id": 26, "group_fulfilment": False,
        "auto_fulfil_group_fulfilment": False, "total": 0, "sales_channel_id": 7,
        "merchant_transaction_reference": "ref-1", "note": "kiosk 4"}
    assert emailed["order_items"] == [{
        "product_id": 4, "custom_price_modifier_value": 2500, "fulfilment_method_id": 1,
        "generate_card_reference": True, "fulfilment_email": "guest@example.com",
        "message": "Thanks!", "discounts": [{"discount_type_id": 1, "value": 2500}]}]
    assert in_venue["order_items"][0]["fulfilment_method_id"] == 3
    assert in_venue["order_items"][0]["fulfilment_email"] is None


async def test_adjust_and_reverse_send_the_contracts_variables(client, toggle) -> None:
    adjustment = await client.adjust(NUMBER, -500, "SITE-001", "till-1")
    await client.reverse("till-1", adjustment.line_item_id or 0, "SITE-001")

    assert toggle.named("CreateBalanceAdjustment")[0][1] == {
        "currency": "GBP", "value": -500, "merchant_id": 26, "unit_epos_reference": "SITE-001",
        "card_reference": NUMBER, "merchant_transaction_reference": "till-1"}
    assert toggle.named("CreateReversal")[0][1] == {
        "merchant_transaction_reference": "till-1-REVERSAL", "merchant_id": 26,
        "unit_epos_reference": "SITE-001",
        "ReversalItems": [{"line_item_id": 9002, "shipping_refund": False}]}
    assert (adjustment.balance_minor, adjustment.tender_minor) == (750, -500)


async def test_a_reference_is_looked_up_through_line_items_and_orders(client, toggle) -> None:
    toggle.queue("LineItems", ok({"LineItems": {"data": [
        {"id": 9001, "value": 2500, "Card": {"card_reference": NUMBER, "balance": 2500}}]}}))
    toggle.queue("Orders", ok({"Orders": {"data": [{
        "id": 501, "created_at": "2026-11-21T09:00:00Z",
        "merchant_transaction_reference": "ref-1", "value": 2500, "LineItems": [
            {"id": 9001, "value": 2500, "Card": {"id": 77, "card_reference": NUMBER,
                                                 "balance": 2500}}]}],
        "total": 1, "per_page": 10, "current_page": 1}}))

    items = await client.line_items_for("ref-1")
    page = await client.orders(reference="ref-1", limit=10)

    assert [(i.id, i.value_minor) for i in items] == [(9001, 2500)]
    assert page.total == 1 and page.orders[0].reference == "ref-1"
    card = page.orders[0].card
    assert card is not None and card.card_reference == NUMBER and card.pin is None
    assert toggle.named("Orders")[0][1] == {
        "merchant_transaction_reference": "ref-1", "created_at_from": None,
        "created_at_to": None, "page": 1, "limit": 10}


async def test_an_unknown_card_has_no_balance(client, toggle) -> None:
    toggle.queue("Cards", ok({"Cards": {"data": [], "total": 0}}))

    assert await client.card_balance("6301190000000000000") is None


# -- card secrets ------------------------------------------------------------------------


async def test_the_pin_reaches_the_caller_only(client, toggle, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    toggle.queue("CreateOrder", error("Throttled", status=429, available=100))

    order = await client.create_order(2500, "ref-1")

    card = order.card
    assert card is not None and card.pin == PIN and card.card_reference == NUMBER
    shown = " ".join([repr(order), str(order), repr(card), str(card), str(card.public()),
                      caplog.text])
    assert PIN not in shown
    assert NUMBER not in shown
    assert "6301 19•• •••• ••• 6946" in repr(card)
    assert card.public()["card_number"] == "6301 19•• •••• ••• 6946"
    assert "pin" not in card.public()
