"""The Toggle simulator's credits and faults: Throttled refusals and the refill, faults that
drop, fail or delay, and documents that are not GraphQL."""

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.support.toggle import (
    ADJUST,
    CARD,
    CARD_BALANCE,
    CARDS,
    CREATE_ORDER,
    Toggle,
    adjust_variables,
    order_variables,
    toggle_sim,
)


@pytest.fixture
async def toggle() -> AsyncIterator[Toggle]:
    async with toggle_sim() as sim:
        yield sim


def available(body: dict) -> int:
    return body["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"]


async def test_every_answer_carries_the_cost_block(toggle: Toggle) -> None:
    body = await toggle.call(CARDS, {"card_reference": CARD})
    assert body["extensions"]["cost"] == {
        "requestedQueryCost": 1, "actualQueryCost": 1,
        "throttleStatus": {"maximumAvailable": 8000, "currentlyAvailable": 7998}}


async def test_a_request_costing_more_than_is_left_is_throttled_whole(toggle: Toggle) -> None:
    await toggle.control("POST", "/_sim/config", credits_refill_per_second=0)
    await toggle.control("POST", "/_sim/toggle/credits", available=15)
    status, body, _ = await toggle.post(CREATE_ORDER, order_variables(1000, "t-1"))
    assert status == 429 and body["errors"] == [{"message": "Throttled"}]
    assert body["extensions"]["cost"]["requestedQueryCost"] == 20
    assert available(body) == 15  # a throttled request costs nothing
    assert (await toggle.control("GET", "/_sim/toggle/orders"))["count"] == 0
    assert available(await toggle.call(ADJUST, adjust_variables(-100, "t-2"))) == 5
    stats = await toggle.control("GET", "/_sim/stats")
    assert stats["throttled"] == 1 and stats["requests"]["createOrder"] == 1


async def test_credits_refill_at_the_configured_rate_up_to_the_maximum(toggle: Toggle) -> None:
    await toggle.control("POST", "/_sim/config", credits_max=100, credits_refill_per_second=5)
    await toggle.control("POST", "/_sim/toggle/credits", available=0)
    status, body, _ = await toggle.post(CARDS, {"card_reference": CARD})
    assert status == 429
    toggle.clock.now += 2  # 10 credits back
    body = await toggle.call(CARDS, {"card_reference": CARD})
    assert available(body) == 9
    toggle.clock.now += 60  # far more than the 91 missing: the bucket stops at its maximum
    body = await toggle.call(CARDS, {"card_reference": CARD})
    assert body["extensions"]["cost"]["throttleStatus"] == {"maximumAvailable": 100,
                                                            "currentlyAvailable": 99}


async def test_throttle_fault_forces_a_throttled_answer(toggle: Toggle) -> None:
    await toggle.control("POST", "/_sim/faults", target="createOrder", kind="throttle")
    status, body, _ = await toggle.post(CREATE_ORDER, order_variables(1000, "f-1"))
    assert status == 429 and body["errors"] == [{"message": "Throttled"}]
    assert (await toggle.call(CREATE_ORDER, order_variables(1000, "f-1")))["data"]["createOrder"]


async def test_drop_after_apply_applies_then_sends_no_answer(toggle: Toggle) -> None:
    await toggle.control("POST", "/_sim/faults", target="createOrder", kind="drop_after_apply")
    with pytest.raises(aiohttp.ClientError):
        await toggle.post(CREATE_ORDER, order_variables(1000, "lost-1"))
    made = await toggle.control("GET", "/_sim/toggle/orders?reference=lost-1")
    assert made["count"] == 1
    _, again, _ = await toggle.post(CREATE_ORDER, order_variables(1000, "lost-1"))
    assert again["errors"][0]["message"] == "Duplicate reference supplied"


async def test_drop_and_status_faults_apply_nothing(toggle: Toggle) -> None:
    await toggle.control("POST", "/_sim/faults", kind="drop")
    with pytest.raises(aiohttp.ClientError):
        await toggle.post(ADJUST, adjust_variables(-100, "d-1"))
    await toggle.control("POST", "/_sim/faults", target="createBalanceAdjustment",
                         kind="status", status=502)
    status, _, _ = await toggle.post(ADJUST, adjust_variables(-100, "d-1"))
    assert status == 502
    body = await toggle.call(CARDS, {"card_reference": CARD})
    assert body["data"]["Cards"]["data"][0]["balance"] == CARD_BALANCE
    stats = await toggle.control("GET", "/_sim/stats")
    assert stats["answers"]["createBalanceAdjustment drop"] == 1
    assert stats["answers"]["createBalanceAdjustment 502"] == 1


async def test_latency_fault_delays_then_serves(toggle: Toggle) -> None:
    await toggle.control("POST", "/_sim/faults", kind="latency", seconds=0.01)
    assert (await toggle.call(CARDS, {"card_reference": CARD}))["data"]["Cards"]["total"] == 1
    assert (await toggle.control("GET", "/_sim/stats"))["faults_pending"] == 0


@pytest.mark.parametrize(("query", "says"), [
    ("mutation { createOrder(", "Syntax Error"),
    ("{ Cards(card_reference: \"1\") { data { cvv } } }", "Cannot query field 'cvv'"),
    ("{ Cards { total } }", "card_reference"),
    ("query Q($v: Int!) { Orders(limit: $v) { total } }", "$v"),
])
async def test_a_document_that_is_not_valid_graphql_is_refused(
    toggle: Toggle, query: str, says: str
) -> None:
    status, body, _ = await toggle.post(query)
    assert status == 200 and "data" not in body
    assert says in body["errors"][0]["message"]
    assert body["extensions"]["cost"]["actualQueryCost"] == 0


async def test_a_body_without_a_query_is_a_bad_request(toggle: Toggle) -> None:
    response = await toggle.http.post("/graphql", data=b"not json")
    assert response.status == 400
