"""Issuing a gift card (respx for Toggle, SQLite in memory, fakeredis): one Toggle order per
reference whatever fails, lost answers resolved by looking the reference up, refusals
verbatim, bad input refused before any call, and the PIN only in the first outcome."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select, update

from tests.support.flows import FakeRemotes, Parts
from tests.support.giftcards import FakeToggle, toggle_parts
from worker.base.arguments import InvalidArgument
from worker.flows.giftcards.issue import issue_gift_card, process_order
from worker.flows.giftcards.requests import validate_card_request
from worker.flows.giftcards.sweep import sweep_giftcards
from worker.flows.parts import Parts as FlowParts
from worker.store.engine import utcnow
from worker.store.giftcards import Orders, giftcard_orders


@pytest.fixture
def toggle() -> FakeToggle:
    return FakeToggle()


@pytest.fixture
async def flow(parts: Parts, remotes: FakeRemotes,
               toggle: FakeToggle) -> AsyncIterator[FlowParts]:
    async with toggle_parts(parts, remotes, toggle) as flow:
        yield flow


def stored_text(flow: FlowParts) -> str:
    with flow.store.engine.connect() as conn:
        rows = conn.execute(select(giftcard_orders)).all()
    return repr(rows)


async def test_a_card_is_issued_once_and_its_pin_is_only_in_the_first_outcome(
    flow: FlowParts, toggle: FakeToggle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    request = validate_card_request("25.00", None, "gc-venue", message="Thank you")

    first = await issue_gift_card(flow, request, "cli")

    assert first.state == "issued" and first.value == "25.00"
    assert first.pin == toggle.pins[0]  # in venue: shown once, by the caller
    assert first.card_number == "6301 19•• •••• ••• 0001"
    assert first.order_id == 500 and first.line_item_id == 9000
    (sent,) = toggle.named("CreateOrder")
    item = sent["order_items"][0]
    assert (item["fulfilment_method_id"], item["fulfilment_email"], item["message"]) == (
        3, None, "Thank you")
    assert (sent["merchant_transaction_reference"], item["custom_price_modifier_value"],
            sent["total"], sent["sales_channel_id"]) == ("gc-venue", 2500, 0, 7)
    assert "pin" not in first.as_dict() and toggle.pins[0] not in repr(first)
    assert toggle.pins[0] not in stored_text(flow)
    assert "issued" in caplog.text and toggle.pins[0] not in caplog.text
    assert "6301190000000020001" not in caplog.text  # masked in the logs too
    row = Orders(flow.store).get("gc-venue")
    assert row is not None and row.card_reference == "6301190000000020001"  # for --reveal

    again = await issue_gift_card(flow, request, "task")

    assert again.duplicate and again.state == "issued" and again.pin is None
    assert again.card_number == first.card_number
    assert len(toggle.named("CreateOrder")) == 1


async def test_an_email_makes_toggle_send_the_card(flow: FlowParts, toggle: FakeToggle) -> None:
    outcome = await issue_gift_card(
        flow, validate_card_request(10, "guest@example.com", "gc-mail"), "task")
    assert outcome.state == "issued"
    item = toggle.named("CreateOrder")[0]["order_items"][0]
    assert (item["fulfilment_method_id"], item["fulfilment_email"]) == (1, "guest@example.com")


async def test_the_same_reference_with_other_content_is_refused_naming_it(
    flow: FlowParts, toggle: FakeToggle
) -> None:
    await issue_gift_card(flow, validate_card_request("10.00", None, "gc-same"), "task")
    with pytest.raises(InvalidArgument, match=r"^reference: 'gc-same' is already used"):
        await issue_gift_card(flow, validate_card_request("11.00", None, "gc-same"), "task")
    assert len(toggle.named("CreateOrder")) == 1


async def test_an_answer_lost_after_toggle_made_the_order_is_found_by_reference(
    flow: FlowParts, toggle: FakeToggle
) -> None:
    toggle.faults.append("lose_after")

    outcome = await issue_gift_card(flow, validate_card_request("5", None, "gc-lost"), "task")

    assert outcome.state == "issued" and outcome.pin is None  # Toggle keeps it; we never had it
    assert outcome.card_number == "6301 19•• •••• ••• 0001" and outcome.line_item_id == 9000
    assert len(toggle.named("CreateOrder")) == 1 and len(toggle.orders) == 1
    assert len(toggle.named("LineItems")) == 1


async def test_an_answer_lost_before_toggle_made_anything_is_sent_again_once(
    flow: FlowParts, toggle: FakeToggle
) -> None:
    toggle.faults.append("lose_before")

    first = await issue_gift_card(flow, validate_card_request("5", None, "gc-retry"), "task")

    assert first.state == "received" and first.retry_in is not None
    row = Orders(flow.store).get("gc-retry")
    assert row is not None and row.uncertain and row.lease_until is None

    second = await process_order(flow, "gc-retry")  # the task again, or the sweep

    assert second.state == "issued" and second.pin == toggle.pins[0]
    assert len(toggle.named("CreateOrder")) == 2 and len(toggle.orders) == 1
    # The uncertain row looked the reference up before it sent again.
    assert [name for name, _ in toggle.calls if name != "Login"] == [
        "CreateOrder", "LineItems", "LineItems", "CreateOrder"]


async def test_an_uncertain_row_whose_lookup_fails_is_not_sent_again(
    flow: FlowParts, toggle: FakeToggle
) -> None:
    toggle.faults.append("lose_before")
    await issue_gift_card(flow, validate_card_request("5", None, "gc-dark"), "task")
    toggle.lookup_down = 10

    again = await process_order(flow, "gc-dark")

    assert again.state == "received" and again.retry_in is not None
    assert len(toggle.named("CreateOrder")) == 1


async def test_a_duplicate_reference_is_resolved_by_what_it_made(
    flow: FlowParts, toggle: FakeToggle
) -> None:
    toggle.orders["gc-dup"] = {"id": 1, "LineItems": [{"id": 42, "value": 700, "Card": {
        "id": 9, "card_reference": "6301190000000099999", "pin": "1111", "balance": 700}}]}

    outcome = await issue_gift_card(flow, validate_card_request("7", None, "gc-dup"), "task")

    assert outcome.state == "issued" and outcome.line_item_id == 42 and outcome.pin is None
    assert outcome.card_number == "6301 19•• •••• ••• 9999"


async def test_a_refusal_fails_the_card_with_toggles_words(
    flow: FlowParts, toggle: FakeToggle
) -> None:
    toggle.faults.append("Product is not available for this merchant")

    outcome = await issue_gift_card(flow, validate_card_request("5", None, "gc-no"), "task")

    assert outcome.state == "failed"
    assert outcome.reason == "Product is not available for this merchant"
    again = await issue_gift_card(flow, validate_card_request("5", None, "gc-no"), "task")
    assert again.duplicate and len(toggle.named("CreateOrder")) == 1


@pytest.mark.parametrize(("arguments", "message"), [
    ({"value": 0}, "^value: must be more than 0"),
    ({"value": "-5"}, "^value: must be more than 0"),
    ({"value": "10.005"}, "^value: must be an amount with at most 2 decimals"),
    ({"value": "ten"}, "^value: must be an amount"),
    ({"value": True}, "^value: must be an amount"),
    ({"value": "5", "email": "not-an-email"}, "^email: must be an email address"),
    ({"value": "5", "reference": "has space"}, "^reference: must be 1 to 64"),
    ({"value": "5", "message": "x" * 501}, "^message: at most 500"),
])
async def test_bad_input_is_refused_before_any_call(
    flow: FlowParts, toggle: FakeToggle, arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        validate_card_request(**arguments)
    assert toggle.calls == []


def test_values_are_exact_minor_units_and_a_missing_reference_takes_the_fallback() -> None:
    request = validate_card_request(Decimal("12.34"), "", None, fallback_reference="task-7f3")
    assert (request.value_minor, request.email, request.reference) == (1234, None, "task-7f3")
    assert validate_card_request(0.1, None, "r").value_minor == 10  # JSON's 0.1, not 0.1000…05
    assert validate_card_request("0.29", None, "r").value_minor == 29


async def test_the_sweep_finishes_an_order_whose_worker_died_mid_call(
    flow: FlowParts, toggle: FakeToggle
) -> None:
    toggle.faults.append("lose_after")  # Toggle made it; the worker never heard back …
    toggle.lookup_down = 100  # … and could not ask either (a query is retried a few times)
    first = await issue_gift_card(flow, validate_card_request("9", None, "gc-swept"), "task")
    assert first.state == "received"
    toggle.lookup_down = 0
    with flow.store.engine.begin() as conn:  # its retry is due
        conn.execute(update(giftcard_orders).values(next_attempt_at=utcnow()))

    assert await sweep_giftcards(flow) == {"orders": 1, "redemptions": 0}

    row = Orders(flow.store).get("gc-swept")
    assert row is not None and row.state == "issued" and row.line_item_id == 9000
    assert len(toggle.named("CreateOrder")) == 1 and len(toggle.orders) == 1
