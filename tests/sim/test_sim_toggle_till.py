"""The Toggle simulator's till side and lookups: balances by number or alias, redeem and top
up with each refusal verbatim, LineItems by reference, reversals once, Orders paging."""

from collections.abc import AsyncIterator

import pytest

from sims.toggle.errors import NEGATIVE, NO_CARD, UNKNOWN_SITE
from tests.support.toggle import (
    ADJUST,
    ALIAS,
    ALIAS_CARD,
    CARD,
    CARD_BALANCE,
    CARDS,
    CREATE_ORDER,
    LINE_ITEMS,
    ORDERS,
    REVERSE,
    SITE,
    Toggle,
    adjust_variables,
    order_variables,
    toggle_sim,
)


@pytest.fixture
async def toggle() -> AsyncIterator[Toggle]:
    async with toggle_sim() as sim:
        yield sim


async def balance(toggle: Toggle, card: str = CARD) -> int:
    body = await toggle.call(CARDS, {"card_reference": card})
    return body["data"]["Cards"]["data"][0]["balance"]


async def test_cards_by_number_alias_or_unknown(toggle: Toggle) -> None:
    by_alias = (await toggle.call(CARDS, {"card_reference": ALIAS}))["data"]["Cards"]
    assert by_alias["total"] == 1 and by_alias["data"][0]["card_reference"] == ALIAS_CARD
    unknown = await toggle.call(CARDS, {"card_reference": "6301190099999999999"})
    assert unknown["data"]["Cards"] == {"data": [], "total": 0}


async def test_redeem_and_top_up_change_the_balance(toggle: Toggle) -> None:
    body = await toggle.call(ADJUST, adjust_variables(-1500, "till-1"))
    adjustment = body["data"]["createBalanceAdjustment"]
    assert adjustment["value"] == -1500
    assert adjustment["LineItem"]["Card"] == {"card_reference": CARD,
                                              "balance": CARD_BALANCE - 1500}
    assert body["extensions"]["cost"]["actualQueryCost"] == 10
    await toggle.call(ADJUST, adjust_variables(200, "till-2", card=ALIAS))  # alias works too
    assert await balance(toggle, ALIAS_CARD) == 2700


@pytest.mark.parametrize(("variables", "message"), [
    (adjust_variables(-CARD_BALANCE - 1, "no-1"), NEGATIVE),
    (adjust_variables(-100, "no-2", card="6301190099999999999"), NO_CARD),
    (adjust_variables(-100, "no-3", site="EPOS-NOWHERE"), UNKNOWN_SITE),
])
async def test_adjustment_refusals_are_verbatim_and_apply_nothing(
    toggle: Toggle, variables: dict, message: str
) -> None:
    _, body, _ = await toggle.post(ADJUST, variables)
    assert body["data"] == {"createBalanceAdjustment": None}
    assert body["errors"] == [{"message": message, "customer_facing": True}]
    assert await balance(toggle) == CARD_BALANCE
    made = await toggle.call(LINE_ITEMS, {"merchant_transaction_reference": variables[
        "merchant_transaction_reference"]})
    assert made["data"]["LineItems"]["data"] == []


async def test_line_items_tell_what_a_reference_created(toggle: Toggle) -> None:
    order = (await toggle.call(CREATE_ORDER, order_variables(700, "order-9")))["data"]
    made = (await toggle.call(LINE_ITEMS, {"merchant_transaction_reference": "order-9"}))
    [item] = made["data"]["LineItems"]["data"]
    assert item["id"] == order["createOrder"]["LineItems"][0]["id"] and item["value"] == 700
    assert item["Card"]["balance"] == 700


async def test_reversal_refunds_the_whole_line_item_once(toggle: Toggle) -> None:
    await toggle.call(ADJUST, adjust_variables(-1200, "sale-1"))
    made = await toggle.call(LINE_ITEMS, {"merchant_transaction_reference": "sale-1"})
    line_item = made["data"]["LineItems"]["data"][0]["id"]
    variables = {"merchant_transaction_reference": "sale-1-REVERSAL", "merchant_id": 26,
                 "unit_epos_reference": SITE, "ReversalItems": [{"line_item_id": line_item}]}
    body = await toggle.call(REVERSE, variables)
    assert body["data"]["createReversal"]["value"] == 1200
    assert await balance(toggle) == CARD_BALANCE
    _, again, _ = await toggle.post(REVERSE, {**variables,
                                              "merchant_transaction_reference": "sale-1-R2"})
    [error] = again["errors"]
    assert again["data"] == {"createReversal": None} and error["message"] == "validation"
    assert error["validation"] == {"ReversalItems.0.line_item_id": [
        "The line item has already been reversed."]}
    assert await balance(toggle) == CARD_BALANCE
    _, dup, _ = await toggle.post(REVERSE, variables)
    assert dup["errors"][0]["message"] == "Duplicate reference supplied"


async def test_orders_page_oldest_first_and_filter(toggle: Toggle) -> None:
    for n in range(5):
        await toggle.call(CREATE_ORDER, order_variables(100 + n, f"page-{n}"))
        toggle.clock.now += 60
    page = (await toggle.call(ORDERS, {"page": 2, "limit": 2}))["data"]["Orders"]
    assert [o["merchant_transaction_reference"] for o in page["data"]] == ["page-2", "page-3"]
    assert (page["total"], page["per_page"], page["current_page"]) == (5, 2, 2)
    one = (await toggle.call(ORDERS, {"merchant_transaction_reference": "page-4"}))
    assert [o["value"] for o in one["data"]["Orders"]["data"]] == [104]
    since = page["data"][1]["created_at"]  # page-3's time: page-3 and page-4 from then on
    later = (await toggle.call(ORDERS, {"created_at_from": since}))["data"]["Orders"]
    assert later["total"] == 2
    _, too_many, _ = await toggle.post(ORDERS, {"limit": 101})
    assert "limit" in too_many["errors"][0]["validation"]


async def test_a_query_costs_one_plus_one_per_ten_rows_of_its_limit(toggle: Toggle) -> None:
    body = await toggle.call(ORDERS, {"limit": 100})
    assert body["extensions"]["cost"]["requestedQueryCost"] == 11
    literal = await toggle.call("{ Orders(limit: 25) { total } }")
    assert literal["extensions"]["cost"]["actualQueryCost"] == 4
