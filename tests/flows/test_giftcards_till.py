"""Till operations (balance, redeem, top up, reverse) against a Toggle stand-in answered
by respx per the contract: GraphQL errors at HTTP 200 as strings, the cost block in every
answer; the real ToggleClient, fakeredis and SQLite in memory."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import fakeredis
import httpx
import orjson
import pytest
import respx

from tests.support.unit import mocked_http
from worker.base import settings as settings_module
from worker.base.arguments import InvalidArgument
from worker.base.settings import Settings
from worker.flows.giftcards.requests import AdjustRequest
from worker.flows.giftcards.till import (
    adjust_gift_card,
    card_balance,
    reverse_gift_card,
    sweep_adjustments,
)
from worker.flows.giftcards.till_store import TillRows
from worker.flows.parts import Parts
from worker.store.database import Store
from worker.store.giftcards import Orders
from worker.systems.toggle.client import ToggleClient
from worker.systems.toggle.session import ToggleSession

URL = "https://api.mytoggle.test/graphql"
CARD, EMPTY = "6301190000000010001", "6301190000000010002"
ALIAS, ALIAS_CARD = "4000123412341234", "6301190000000010003"
SITES = {"london": "EPOS-LDN-1", "leeds": "EPOS-LDS-1"}
NEGATIVE = ("Applying this transaction would have resulted in a negative balance. "
            "Transaction not applied.")
NO_CARD = ("No card has been found for this account for the card ref supplied. "
           "Transaction not applied.")
UNKNOWN_SITE = "The external_site_id supplied was not recognised for this account."
DUPLICATE = "Duplicate reference supplied"
_OPERATION = re.compile(r"(?:query|mutation)\s+(\w+)")
# Toggle's GraphQL root field of each operation the client sends.
_FIELD = {"Cards": "Cards", "CreateBalanceAdjustment": "createBalanceAdjustment",
          "CreateReversal": "createReversal", "LineItems": "LineItems"}


def _cost() -> dict[str, Any]:
    return {"cost": {"requestedQueryCost": 10, "actualQueryCost": 10, "throttleStatus": {
        "maximumAvailable": 8000, "currentlyAvailable": 7000}}}


def ok(data: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.Response(200, json={"data": data, "extensions": _cost()}, headers=headers)


def refused(field: str, message: str, **extra: Any) -> httpx.Response:
    return httpx.Response(200, json={
        "errors": [{"message": message, "customer_facing": True, **extra}],
        "data": {field: None}, "extensions": _cost()})


@dataclass
class Item:
    id: int
    value: int
    card: str
    reference: str
    reversed: bool = False


class FakeToggle:
    """Toggle's till side in memory: cards, sites, one reference namespace, line items;
    `drop_after_apply` applies the next mutation and loses its answer."""

    def __init__(self) -> None:
        self.balances = {CARD: 5000, EMPTY: 0, ALIAS_CARD: 2500}
        self.aliases = {ALIAS: ALIAS_CARD}
        self.items: list[Item] = []
        self.references: set[str] = set()
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.drop_after_apply = 0
        self.queued: dict[str, list[httpx.Response]] = {}  # answered before the state is
        self.ids = 7000

    def named(self, operation: str) -> list[dict[str, Any]]:
        return [variables for name, variables in self.calls if name == operation]

    def _id(self) -> int:
        self.ids += 1
        return self.ids

    def _card(self, number: str) -> str | None:
        number = self.aliases.get(number, number)
        return number if number in self.balances else None

    def _item(self, value: int, card: str, reference: str) -> Item:
        item = Item(self._id(), value, card, reference)
        self.items.append(item)
        self.references.add(reference)
        return item

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        match = _OPERATION.search(body["query"])
        assert match, body["query"]
        operation, variables = match.group(1), body["variables"]
        self.calls.append((operation, variables))
        if operation == "Login":
            return ok({"loginUser": {"id": 17}}, **{"X-Authorization": "Bearer jwt-1",
                                                    "Authorization": "Bearer jwt-1"})
        if self.queued.get(operation):
            return self.queued[operation].pop(0)
        answer = getattr(self, operation.lower())(variables)
        if isinstance(answer, httpx.Response):
            return answer
        if self.drop_after_apply and operation.startswith("Create"):
            self.drop_after_apply -= 1
            raise httpx.ReadTimeout("answer lost", request=request)
        return ok({_FIELD[operation]: answer})

    def cards(self, v: dict[str, Any]) -> Any:
        number = self._card(v["card_reference"])
        if number is None:
            return {"data": [], "total": 0}
        alias = next((a for a, n in self.aliases.items() if n == number), None)
        return {"data": [{"id": 77, "card_reference": number, "balance": self.balances[number],
                          "initial_balance": 5000, "expiry_time": None,
                          "card_alias_card_reference": alias,
                          "product_name": "In-store Gift"}], "total": 1}

    def createbalanceadjustment(self, v: dict[str, Any]) -> Any:
        field, reference = "createBalanceAdjustment", v["merchant_transaction_reference"]
        if reference in self.references:
            return refused(field, DUPLICATE)
        if v["unit_epos_reference"] not in SITES.values():
            return refused(field, UNKNOWN_SITE)
        number = self._card(v["card_reference"])
        if number is None:
            return refused(field, NO_CARD)
        if self.balances[number] + v["value"] < 0:
            return refused(field, NEGATIVE)
        self.balances[number] += v["value"]
        item = self._item(v["value"], number, reference)
        return {"id": self._id(), "value": v["value"], "LineItem": {"id": item.id, "Card": {
            "card_reference": number, "balance": self.balances[number]}},
            "ValueSplit": {"tender": v["value"], "discount": 0}}

    def createreversal(self, v: dict[str, Any]) -> Any:
        field, reference = "createReversal", v["merchant_transaction_reference"]
        if reference in self.references:
            return refused(field, DUPLICATE)
        (spec,) = v["ReversalItems"]
        original = next((i for i in self.items if i.id == spec["line_item_id"]), None)
        if original is None or original.reversed:
            return refused(field, "validation", validation={
                "ReversalItems.0.line_item_id": ["The line item has already been reversed."]})
        original.reversed = True
        self.balances[original.card] -= original.value
        self._item(-original.value, original.card, reference)
        return {"id": self._id(), "value": -original.value}

    def lineitems(self, v: dict[str, Any]) -> Any:
        return {"data": [
            {"id": i.id, "value": i.value,
             "Card": {"card_reference": i.card, "balance": self.balances[i.card]}}
            for i in self.items if i.reference == v["merchant_transaction_reference"]]}


def Adjust(card: str, value_minor: int, site: str, reference: str) -> AdjustRequest:
    """A validated request as validate_adjust_request makes it."""
    return AdjustRequest(card, value_minor, site, SITES.get(site, "EPOS-YRK-1"), reference)


@pytest.fixture
def settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    for name, value in {
        "TOGGLE_API_URL": URL, "TOGGLE_USERNAME": "api-user", "TOGGLE_PASSWORD": "tg-Pa55",
        "TOGGLE_ACCOUNT_ID": "412", "TOGGLE_SITES": ",".join(f"{k}={v}" for k, v in SITES.items()),
    }.items():
        monkeypatch.setenv(name, value)
    settings_module.clear_cache()
    yield settings_module.get_settings()
    settings_module.clear_cache()


@pytest.fixture
def toggle() -> FakeToggle:
    return FakeToggle()


@pytest.fixture
async def till(settings: Settings, store: Store, toggle: FakeToggle) -> AsyncIterator[Parts]:
    redis = fakeredis.FakeAsyncRedis()
    router = respx.Router(assert_all_called=False)
    router.post(URL).mock(side_effect=toggle)
    client = ToggleClient(settings, redis,
                          session=ToggleSession(settings, redis, mocked_http(router, URL)))
    yield Parts(settings, store, redis, None, None, None, toggle=client)  # type: ignore[arg-type]
    await client.aclose()
    await redis.aclose()


def till_calls(toggle: FakeToggle) -> list[str]:
    return [name for name, _ in toggle.calls if name != "Login"]


def assert_masked(shown: dict[str, Any], *numbers: str) -> None:
    text = json.dumps(shown, ensure_ascii=False)
    for number in numbers:
        assert number not in text and number[-7:] not in text


# -- balance ------------------------------------------------------------------------------


async def test_balance_of_a_card(till: Parts, toggle: FakeToggle) -> None:
    outcome = await card_balance(till, CARD)

    shown = outcome.as_dict()
    assert (shown["state"], shown["balance"]) == ("ok", "50.00")
    assert shown["card_number"] == "6301 19•• •••• ••• 0001"
    assert_masked(shown, CARD)
    assert till_calls(toggle) == ["Cards"]


async def test_an_unknown_card_is_a_refusal_naming_card_reference(till: Parts) -> None:
    outcome = await card_balance(till, "6301190000000099999")

    assert outcome.state == "unknown"
    assert outcome.reason is not None and outcome.reason.startswith("card_reference:")
    assert_masked(outcome.as_dict(), "6301190000000099999")


@pytest.mark.parametrize("number", [ALIAS, "63011900123", "7301190000000010001", "abc"])
async def test_a_number_toggle_did_not_issue_is_refused_before_any_call(
        till: Parts, toggle: FakeToggle, number: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^card_reference: "):
        await card_balance(till, number)
    with pytest.raises(InvalidArgument, match=r"^card_reference: "):
        await adjust_gift_card(till, Adjust(number, -100, "london", "R-1"), "task")
    assert toggle.calls == []


async def test_with_validation_off_an_alias_is_looked_up_as_given(
        till: Parts, toggle: FakeToggle, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(till.settings, "TOGGLE_VALIDATE_CARD_NUMBER", False)

    outcome = await card_balance(till, ALIAS)

    assert (outcome.state, outcome.as_dict()["balance"]) == ("ok", "25.00")
    assert toggle.named("Cards") == [{"card_reference": ALIAS}]
    assert_masked(outcome.as_dict(), ALIAS, ALIAS_CARD)


# -- redeem and top up --------------------------------------------------------------------


async def test_redeem_then_top_up(till: Parts, toggle: FakeToggle) -> None:
    redeemed = await adjust_gift_card(till, Adjust(CARD, -1250, "london", "R-1"), "task")
    topped = await adjust_gift_card(till, Adjust(CARD, 500, "leeds", "R-2"), "cli")

    first, second = redeemed.as_dict(), topped.as_dict()
    assert (first["state"], first["operation"], first["value"], first["balance"]) == (
        "applied", "redemption", "-12.50", "37.50")
    assert (second["state"], second["operation"], second["value"], second["balance"]) == (
        "applied", "top-up", "5.00", "42.50")
    assert first["adjustment_id"] is not None and first["line_item_id"] == toggle.items[0].id
    assert [v["unit_epos_reference"] for v in toggle.named("CreateBalanceAdjustment")] == [
        "EPOS-LDN-1", "EPOS-LDS-1"]
    assert toggle.balances[CARD] == 4250
    assert_masked(first, CARD)
    assert_masked(second, CARD)


async def test_the_same_reference_twice_is_one_call(till: Parts, toggle: FakeToggle) -> None:
    request = Adjust(CARD, -1000, "london", "R-1")
    first = await adjust_gift_card(till, request, "task")
    again = await adjust_gift_card(till, request, "task")

    assert len(toggle.named("CreateBalanceAdjustment")) == 1
    assert again.duplicate and again.as_dict() == {**first.as_dict(), "duplicate": True}
    assert toggle.balances[CARD] == 4000


async def test_a_lost_answer_is_looked_up_and_applied_once(
        till: Parts, toggle: FakeToggle) -> None:
    toggle.drop_after_apply = 1

    outcome = await adjust_gift_card(till, Adjust(CARD, -700, "london", "R-1"), "task")

    assert (outcome.state, outcome.as_dict()["balance"]) == ("applied", "43.00")
    assert till_calls(toggle) == ["CreateBalanceAdjustment", "LineItems"]
    assert outcome.row.line_item_id == toggle.items[0].id and not outcome.row.uncertain
    assert toggle.balances[CARD] == 4300


async def test_a_lost_answer_not_applied_is_let_go_to_try_again(
        till: Parts, toggle: FakeToggle, monkeypatch: pytest.MonkeyPatch) -> None:
    request = Adjust(CARD, -700, "london", "R-1")
    real = toggle.createbalanceadjustment

    def lost_before_applying(v: dict[str, Any]) -> Any:
        raise httpx.ReadTimeout("no answer")

    monkeypatch.setattr(toggle, "createbalanceadjustment", lost_before_applying)
    first = await adjust_gift_card(till, request, "task")
    assert (first.state, first.retry_in) == ("received", 5.0)
    assert not first.row.uncertain and first.row.lease_until is None

    monkeypatch.setattr(toggle, "createbalanceadjustment", real)
    TillRows(till.store).outbox.release("R-1")  # the retry is due now
    second = await adjust_gift_card(till, request, "task")

    assert second.state == "applied" and toggle.balances[CARD] == 4300
    assert till_calls(toggle) == ["CreateBalanceAdjustment", "LineItems",
                                  "CreateBalanceAdjustment"]


async def test_a_row_left_uncertain_by_a_dead_worker_is_looked_up_first(
        till: Parts, toggle: FakeToggle) -> None:
    adjustments = TillRows(till.store)
    adjustments.record("R-1", kind="adjust", site="london", site_reference="EPOS-LDN-1",
                       source="task", card_reference=CARD, value_minor=-300)
    adjustments.outbox.mark_uncertain("R-1")
    toggle.balances[CARD] -= 300
    toggle._item(-300, CARD, "R-1")  # what the dead worker's request did

    outcome = await adjust_gift_card(till, Adjust(CARD, -300, "london", "R-1"), "task")

    assert outcome.state == "applied" and till_calls(toggle) == ["LineItems"]
    assert toggle.balances[CARD] == 4700


@pytest.mark.parametrize(("card", "value", "message"), [
    (EMPTY, -100, NEGATIVE), ("6301190000000099999", 100, NO_CARD)])
async def test_toggle_refusals_end_failed_verbatim(
        till: Parts, toggle: FakeToggle, card: str, value: int, message: str) -> None:
    outcome = await adjust_gift_card(till, Adjust(card, value, "london", "R-1"), "task")

    assert (outcome.state, outcome.row.reason) == ("failed", message)
    assert outcome.as_dict()["reason"] == message
    again = await adjust_gift_card(till, Adjust(card, value, "london", "R-1"), "task")
    assert again.state == "failed" and len(toggle.named("CreateBalanceAdjustment")) == 1
    with pytest.raises(InvalidArgument, match=r"^reference: 'R-1' was not applied"):
        await reverse_gift_card(till, "R-1", "london", "task")
    assert toggle.named("CreateReversal") == []


async def test_an_unmapped_site_reference_is_toggles_refusal_verbatim(
        till: Parts, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(till.settings.TOGGLE_SITES, "york", "EPOS-YRK-1")

    outcome = await adjust_gift_card(till, Adjust(CARD, -100, "york", "R-1"), "task")

    assert (outcome.state, outcome.row.reason) == ("failed", UNKNOWN_SITE)


async def test_an_unknown_site_name_is_refused_before_any_call(
        till: Parts, toggle: FakeToggle) -> None:
    with pytest.raises(InvalidArgument, match=r"^site: 'paris'"):
        await adjust_gift_card(till, Adjust(CARD, -100, "paris", "R-1"), "task")
    with pytest.raises(InvalidArgument, match=r"^site: 'paris'"):
        await reverse_gift_card(till, "R-1", "paris", "task")
    assert toggle.calls == [] and TillRows(till.store).get("R-1") is None


# -- reverse ------------------------------------------------------------------------------


async def test_reverse_once_and_twice_is_one_call(till: Parts, toggle: FakeToggle) -> None:
    await adjust_gift_card(till, Adjust(CARD, -2000, "london", "R-1"), "task")

    first = await reverse_gift_card(till, "R-1", "london", "cli")
    second = await reverse_gift_card(till, "R-1", "london", "cli")

    shown = first.as_dict()
    assert (shown["reference"], shown["state"], shown["operation"]) == (
        "R-1-REVERSAL", "applied", "reversal")
    assert (shown["value"], shown["balance"], shown["original_reference"]) == (
        "20.00", "50.00", "R-1")
    assert toggle.named("CreateReversal") == [{
        "merchant_transaction_reference": "R-1-REVERSAL", "merchant_id": 26,
        "unit_epos_reference": "EPOS-LDN-1",
        "ReversalItems": [{"line_item_id": toggle.items[0].id, "shipping_refund": False}]}]
    assert second.duplicate and second.as_dict() == {**shown, "duplicate": True}
    assert toggle.balances[CARD] == 5000
    assert_masked(shown, CARD)


async def test_reversing_what_we_did_not_record_looks_its_line_item_up(
        till: Parts, toggle: FakeToggle) -> None:
    toggle.balances[CARD] -= 900
    till_item = toggle._item(-900, CARD, "TILL-9")  # made by a till, not by us

    outcome = await reverse_gift_card(till, "TILL-9", "london", "task")

    assert outcome.state == "applied" and toggle.balances[CARD] == 5000
    assert toggle.named("CreateReversal")[0]["ReversalItems"][0]["line_item_id"] == till_item.id
    assert_masked(outcome.as_dict(), CARD)


async def test_a_reversal_toggle_refuses_is_failed_verbatim(
        till: Parts, toggle: FakeToggle) -> None:
    item = toggle._item(-900, CARD, "TILL-9")
    item.reversed = True  # reversed already, elsewhere

    outcome = await reverse_gift_card(till, "TILL-9", "london", "task")

    assert outcome.state == "failed"
    assert outcome.row.reason == (
        "validation (ReversalItems.0.line_item_id: The line item has already been reversed.)")


async def test_reversing_a_reference_toggle_never_saw_sends_nothing(
        till: Parts, toggle: FakeToggle) -> None:
    outcome = await reverse_gift_card(till, "NOPE", "london", "task")

    assert outcome.state == "failed" and "NOPE" in (outcome.row.reason or "")
    assert till_calls(toggle) == ["LineItems"]


async def test_a_reversal_whose_answer_was_lost_is_applied_once(
        till: Parts, toggle: FakeToggle) -> None:
    await adjust_gift_card(till, Adjust(CARD, -2000, "london", "R-1"), "task")
    toggle.drop_after_apply = 1

    outcome = await reverse_gift_card(till, "R-1", "london", "task")
    again = await reverse_gift_card(till, "R-1", "london", "task")

    assert outcome.state == "applied" and again.duplicate
    assert len(toggle.named("CreateReversal")) == 1 and toggle.balances[CARD] == 5000


async def test_reversing_a_card_order_of_ours_uses_its_line_item(
        till: Parts, toggle: FakeToggle) -> None:
    issued = toggle._item(2500, ALIAS_CARD, "CARD-1")  # the order's line item in Toggle
    orders = Orders(till.store)
    orders.record("CARD-1", 2500, None, None, None, "task")
    orders.issued("CARD-1", None, order_id=3001, line_item_id=issued.id, card_id=77,
                  card_reference=ALIAS_CARD, card_masked="6301 19•• •••• ••• 0003")

    outcome = await reverse_gift_card(till, "CARD-1", "london", "task")

    assert till_calls(toggle)[0] == "CreateReversal"
    assert toggle.named("CreateReversal")[0]["ReversalItems"][0]["line_item_id"] == issued.id
    assert (outcome.state, outcome.as_dict()["value"]) == ("applied", "-25.00")
    assert toggle.balances[ALIAS_CARD] == 0
    assert_masked(outcome.as_dict(), ALIAS_CARD)


@pytest.mark.parametrize("reference", ["", "bad reference!", "x" * 65])
async def test_a_reference_to_reverse_must_be_one(
        till: Parts, toggle: FakeToggle, reference: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^reference: "):
        await reverse_gift_card(till, reference, "london", "task")
    assert toggle.calls == []


async def test_an_adjustment_still_open_is_not_reversed_yet(
        till: Parts, toggle: FakeToggle) -> None:
    TillRows(till.store).record("R-1", kind="adjust", site="london",
                                site_reference="EPOS-LDN-1", source="task",
                                card_reference=CARD, value_minor=-300)

    with pytest.raises(InvalidArgument, match=r"^reference: 'R-1' is still being applied"):
        await reverse_gift_card(till, "R-1", "london", "task")
    assert toggle.calls == [] and TillRows(till.store).get("R-1-REVERSAL") is None


async def test_the_sweep_finishes_a_row_whose_worker_was_lost(
        till: Parts, toggle: FakeToggle) -> None:
    rows = TillRows(till.store)
    rows.record("R-1", kind="adjust", site="london", site_reference="EPOS-LDN-1",
                source="task", card_reference=CARD, value_minor=-300)
    rows.record("R-2", kind="adjust", site="london", site_reference="EPOS-LDN-1",
                source="task", card_reference=CARD, value_minor=-200)
    rows.outbox.mark_uncertain("R-1")
    toggle.balances[CARD] -= 300
    toggle._item(-300, CARD, "R-1")  # sent by the lost worker; R-2 never left
    rows.outbox.defer(["R-1", "R-2"], -1)  # both due now

    counts = await sweep_adjustments(till)

    assert counts == {"applied": 2, "failed": 0, "open": 0}
    assert till_calls(toggle) == ["LineItems", "CreateBalanceAdjustment"]
    assert toggle.balances[CARD] == 4500


async def test_unauthorized_after_a_new_login_is_tried_again_later(
        till: Parts, toggle: FakeToggle) -> None:
    unauthorized = refused("createBalanceAdjustment", "Unauthorized", customer_facing=False)
    toggle.queued["CreateBalanceAdjustment"] = [unauthorized, unauthorized]

    first = await adjust_gift_card(till, Adjust(CARD, -100, "london", "R-1"), "task")

    assert (first.state, first.retry_in) == ("received", 30.0)
    assert "Unauthorized" in (first.row.reason or "") and toggle.balances[CARD] == 5000
    TillRows(till.store).outbox.release("R-1")
    second = await adjust_gift_card(till, Adjust(CARD, -100, "london", "R-1"), "task")
    assert second.state == "applied" and toggle.balances[CARD] == 4900
    # Looked up first (the refused send was marked uncertain), then sent once more.
    assert till_calls(toggle)[-2:] == ["LineItems", "CreateBalanceAdjustment"]
