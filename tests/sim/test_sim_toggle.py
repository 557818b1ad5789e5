"""The Toggle simulator, in-process: login and tokens, each mutation and each refusal as the
contract words it, duplicate references, lookups, paging, and real GraphQL parsing."""

from collections.abc import AsyncIterator

import pytest

from sims.toggle.errors import DUPLICATE
from tests.support.toggle import (
    CARD,
    CARD_BALANCE,
    CARDS,
    CREATE_ORDER,
    LOGIN,
    PASSWORD,
    PRODUCTS,
    USERNAME,
    Toggle,
    adjust_variables,
    order_variables,
    toggle_sim,
)


@pytest.fixture
async def toggle() -> AsyncIterator[Toggle]:
    async with toggle_sim() as sim:
        yield sim


def refusal(body: dict, field: str) -> dict:
    """The one error of a refused call, after checking it applied nothing visible."""
    assert body["data"] == {field: None}, body
    [error] = body["errors"]
    return error


async def test_login_hands_the_token_in_both_headers(toggle: Toggle) -> None:
    status, body, headers = await toggle.post(
        LOGIN, {"username": USERNAME, "password": PASSWORD}, token="")
    assert status == 200 and body["data"] == {"loginUser": {"id": 17}}
    assert headers["X-Authorization"] == headers["Authorization"]
    assert headers["X-Authorization"].startswith("Bearer ey")  # JWT-like
    assert body["extensions"]["cost"]["requestedQueryCost"] == 1


async def test_wrong_credentials_are_refused_customer_facing(toggle: Toggle) -> None:
    status, body, headers = await toggle.post(
        LOGIN, {"username": USERNAME, "password": "nope"}, token="")
    assert status == 200 and "X-Authorization" not in headers
    assert refusal(body, "loginUser") == {"message": "Invalid credentials",
                                          "customer_facing": True}


async def test_calls_without_a_valid_token_are_unauthorized(toggle: Toggle) -> None:
    for token in ("", "not-a-token"):
        status, body, _ = await toggle.post(CARDS, {"card_reference": CARD}, token=token)
        assert status == 200
        assert body["errors"] == [{"message": "Unauthorized", "customer_facing": False}]
        assert "data" not in body and body["extensions"]["cost"]["actualQueryCost"] == 0
    await toggle.control("POST", "/_sim/tokens/expire")
    status, body, _ = await toggle.post(CARDS, {"card_reference": CARD})
    assert body["errors"][0]["message"] == "Unauthorized"


async def test_a_token_dies_after_its_lifetime(toggle: Toggle) -> None:
    toggle.clock.now += 3600 + 1
    _, body, _ = await toggle.post(CARDS, {"card_reference": CARD})
    assert body["errors"][0]["message"] == "Unauthorized"


async def test_sliding_refresh_past_half_life_and_on_rotation(toggle: Toggle) -> None:
    first = toggle.token
    toggle.clock.now += 1000  # before half its life: no new token
    _, _, headers = await toggle.post(CARDS, {"card_reference": CARD})
    assert "X-Authorization" not in headers
    toggle.clock.now += 900  # past half of 3600 s
    _, _, headers = await toggle.post(CARDS, {"card_reference": CARD})
    second = headers["X-Authorization"].removeprefix("Bearer ")
    assert second != first and headers["Authorization"] == headers["X-Authorization"]
    # A request still in flight with the old token learns the same successor...
    _, _, again = await toggle.post(CARDS, {"card_reference": CARD}, token=first)
    assert again["X-Authorization"] == f"Bearer {second}"
    # ...until the grace period ends: then the old token is refused.
    toggle.clock.now += 61
    _, body, _ = await toggle.post(CARDS, {"card_reference": CARD}, token=first)
    assert body["errors"][0]["message"] == "Unauthorized"
    await toggle.control("POST", "/_sim/tokens/rotate")
    _, _, headers = await toggle.post(CARDS, {"card_reference": CARD}, token=second)
    assert headers["X-Authorization"] not in (f"Bearer {first}", f"Bearer {second}")


async def test_products_include_in_store_gift(toggle: Toggle) -> None:
    body = await toggle.call(PRODUCTS, {"account_id": 1001})
    assert {"id": 1, "name": "In-store Gift"} in body["data"]["Products"]


async def test_create_order_issues_a_card_per_item_and_costs_20(toggle: Toggle) -> None:
    body = await toggle.call(CREATE_ORDER, order_variables(1000, "gift-1", "guest@example.com"))
    order = body["data"]["createOrder"]
    [item] = order["LineItems"]
    card = item["Card"]
    assert card["card_reference"].startswith("63011900") and len(card["card_reference"]) == 19
    assert len(card["pin"]) == 4 and card["pin"].isdigit()
    assert card["balance"] == 1000 and card["product_name"] == "In-store Gift"
    assert body["extensions"]["cost"]["actualQueryCost"] == 20
    made = await toggle.control("GET", "/_sim/toggle/orders?reference=gift-1")
    assert made["count"] == 1 and made["orders"][0]["emails"] == ["guest@example.com"]
    found = await toggle.call(CARDS, {"card_reference": card["card_reference"]})
    assert found["data"]["Cards"]["data"][0]["balance"] == 1000


@pytest.mark.parametrize(("change", "field", "problem"), [
    ({"fulfilment_method_id": 1, "fulfilment_email": None}, "order_items.0.fulfilment_email",
     "The fulfilment email field is required when fulfilment method id is 1."),
    ({"fulfilment_email": "not-an-email"}, "order_items.0.fulfilment_email",
     "The fulfilment email must be a valid email address."),
    ({"product_id": 999}, "order_items.0.product_id", "The selected product id is invalid."),
    ({"custom_price_modifier_value": None}, "order_items.0.custom_price_modifier_value",
     "The custom price modifier value field is required."),
])
async def test_create_order_validation_map(toggle: Toggle, change: dict, field: str,
                                           problem: str) -> None:
    _, body, _ = await toggle.post(CREATE_ORDER, order_variables(1000, "bad-1", **change))
    assert refusal(body, "createOrder") == {
        "message": "validation", "customer_facing": True, "validation": {field: [problem]}}
    assert body["extensions"]["cost"]["actualQueryCost"] == 20  # a refused mutation costs
    assert (await toggle.control("GET", "/_sim/toggle/orders"))["count"] == 0


async def test_total_must_match_the_discounted_items(toggle: Toggle) -> None:
    variables = {**order_variables(1000, "bad-total"), "total": 1000}
    _, body, _ = await toggle.post(CREATE_ORDER, variables)
    assert "total" in refusal(body, "createOrder")["validation"]


async def test_a_reference_is_used_once_across_orders_adjustments_and_reversals(
    toggle: Toggle,
) -> None:
    await toggle.call(CREATE_ORDER, order_variables(500, "ref-1"))
    _, again, _ = await toggle.post(CREATE_ORDER, order_variables(500, "ref-1"))
    assert refusal(again, "createOrder") == {"message": DUPLICATE, "customer_facing": True}
    _, adjust, _ = await toggle.post(
        "mutation A($currency: String!, $value: Int!, $merchant_id: Int!, "
        "$unit_epos_reference: String!, $card_reference: String!, "
        "$merchant_transaction_reference: String!) { createBalanceAdjustment(currency: "
        "$currency, value: $value, merchant_id: $merchant_id, unit_epos_reference: "
        "$unit_epos_reference, card_reference: $card_reference, merchant_transaction_reference: "
        "$merchant_transaction_reference) { id } }", adjust_variables(-100, "ref-1"))
    assert refusal(adjust, "createBalanceAdjustment")["message"] == DUPLICATE
    assert (await toggle.control("GET", "/_sim/toggle/orders?reference=ref-1"))["count"] == 1
    cards = await toggle.call(CARDS, {"card_reference": CARD})
    assert cards["data"]["Cards"]["data"][0]["balance"] == CARD_BALANCE  # nothing applied
