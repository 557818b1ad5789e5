"""Points → gift card, the saga (respx for Treazure, Engage and Toggle; SQLite in memory;
fakeredis): points taken once, one card, Engage set by the points drain, refusals refunded
once, and a worker killed between the steps resumed from the step it recorded."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import respx
from sqlalchemy import select, update

from tests.support.flows import TREAZURE, FakeRemotes, Parts
from tests.support.giftcards import FakeToggle, FakeTreazureAccount, toggle_parts
from worker.base.arguments import InvalidArgument
from worker.flows.giftcards import redeem
from worker.flows.giftcards.issue import issue_gift_card
from worker.flows.giftcards.redeem import redeem_points_for_gift_card, resume_redemption
from worker.flows.giftcards.requests import (
    RedeemRequest,
    validate_card_request,
    validate_redeem_request,
)
from worker.flows.giftcards.sweep import sweep_giftcards
from worker.flows.parts import Parts as FlowParts
from worker.flows.points.drain import drain
from worker.store.engine import utcnow
from worker.store.giftcards import (
    Redemptions,
    giftcard_adjustments,
    giftcard_orders,
    giftcard_redemptions,
)
from worker.store.ledger import Ledger, point_transactions

CONTACT = "00000000-0000-0000-0000-0000000000c7"
ACCOUNT = f"{TREAZURE}/api/v1.0/LoyaltyVault/Account/{CONTACT}"


@pytest.fixture
def toggle() -> FakeToggle:
    return FakeToggle()


@pytest.fixture
def account(remotes: FakeRemotes) -> FakeTreazureAccount:
    """The contact holds 1,000.00 points."""
    fake = FakeTreazureAccount(balance_cents=100_000)
    router: respx.MockRouter = remotes.forget[0]
    router.post(f"{ACCOUNT}/Transaction").mock(side_effect=fake.book)
    router.get(url__startswith=f"{ACCOUNT}/LoyaltyPrograms").mock(side_effect=fake.history)
    return fake


@pytest.fixture
async def flow(parts: Parts, remotes: FakeRemotes, toggle: FakeToggle,
               account: FakeTreazureAccount) -> AsyncIterator[FlowParts]:
    async with toggle_parts(parts, remotes, toggle) as flow:
        yield flow


def request(reference: str, points: str = "500", value: str = "25.00") -> RedeemRequest:
    return validate_redeem_request(CONTACT, points, value, "guest@example.com",
                                   reference=reference)


def everything_stored(flow: FlowParts) -> str:
    with flow.store.engine.connect() as conn:
        return repr([conn.execute(select(t)).all() for t in (
            giftcard_orders, giftcard_redemptions, giftcard_adjustments, point_transactions)])


async def test_points_become_one_card_and_the_drain_sets_engage(
    flow: FlowParts, toggle: FakeToggle, account: FakeTreazureAccount, remotes: FakeRemotes
) -> None:
    outcome = await redeem_points_for_gift_card(flow, request("rd-ok"), "task")

    assert outcome.state == "card_issued" and outcome.points_state == "booked"
    assert outcome.card_number == "6301 19•• •••• ••• 0001" and outcome.value == "25.00"
    assert [(b["receiptNr"], b["cents"], b["comment"]) for b in account.bookings] == [
        ("rd-ok-points", -50_000, "gift card rd-ok")]
    (sent,) = toggle.named("CreateOrder")
    assert sent["merchant_transaction_reference"] == "rd-ok"
    assert sent["order_items"][0]["fulfilment_email"] == "guest@example.com"

    assert await drain(flow) == 1  # the points flow's own push, not the saga's
    assert remotes.engage[CONTACT] == 500.0
    done = await resume_redemption(flow, "rd-ok")

    assert done.state == "done" and done.points_state == "applied"
    again = await redeem_points_for_gift_card(flow, request("rd-ok"), "task")
    assert again.duplicate and again.state == "done"
    assert len(account.bookings) == 1 and len(toggle.named("CreateOrder")) == 1
    assert len(remotes.pushes) == 1
    # The PIN Toggle answered with reached no row and no outcome.
    assert toggle.pins and toggle.pins[0] not in everything_stored(flow)
    assert toggle.pins[0] not in repr(done.as_dict()) and "pin" not in done.as_dict()


async def test_insufficient_points_refuse_the_redemption_and_issue_nothing(
    flow: FlowParts, toggle: FakeToggle, account: FakeTreazureAccount
) -> None:
    outcome = await redeem_points_for_gift_card(flow, request("rd-poor", points="1000.01"),
                                                "task")

    assert outcome.state == "failed" and outcome.points_state == "failed"
    assert outcome.reason is not None and "insufficient balance" in outcome.reason
    assert account.bookings == [] and toggle.named("CreateOrder") == []
    assert account.balance_cents == 100_000


async def test_a_card_toggle_refuses_gives_the_points_back_once(
    flow: FlowParts, toggle: FakeToggle, account: FakeTreazureAccount
) -> None:
    toggle.faults.append("Card value exceeds the maximum for this product")

    outcome = await redeem_points_for_gift_card(flow, request("rd-refused"), "task")

    assert outcome.state == "refunded"
    assert outcome.reason == "Card value exceeds the maximum for this product"
    assert [(b["receiptNr"], b["cents"]) for b in account.bookings] == [
        ("rd-refused-points", -50_000), ("rd-refused-refund", 50_000)]
    assert account.balance_cents == 100_000
    again = await redeem_points_for_gift_card(flow, request("rd-refused"), "task")
    await sweep_giftcards(flow)
    assert again.duplicate and again.state == "refunded"
    assert len(account.bookings) == 2 and len(toggle.named("CreateOrder")) == 1


async def test_a_worker_killed_between_the_points_and_the_card_resumes_without_a_rebooking(
    flow: FlowParts, toggle: FakeToggle, account: FakeTreazureAccount,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Killed(BaseException):
        pass

    async def killed(parts: FlowParts, reference: str) -> None:
        raise Killed

    monkeypatch.setattr(redeem, "process_order", killed)
    with pytest.raises(Killed):
        await redeem_points_for_gift_card(flow, request("rd-crash"), "task")
    monkeypatch.undo()
    row = Redemptions(flow.store).get("rd-crash")
    assert row is not None and row.lease_until is None  # let go on the way out
    # A killed worker lets nothing go: its lease simply runs out.
    with flow.store.engine.begin() as conn:
        conn.execute(update(giftcard_redemptions).values(
            lease_until=utcnow().replace(year=2020), next_attempt_at=None))
        state = conn.execute(select(giftcard_redemptions.c.state)).scalar()
    assert state == "card_pending" and len(account.bookings) == 1
    assert toggle.named("CreateOrder") == []

    assert await sweep_giftcards(flow) == {"orders": 0, "redemptions": 1}

    resumed = await resume_redemption(flow, "rd-crash")
    assert resumed.state == "card_issued" and resumed.card_number is not None
    assert len(account.bookings) == 1 and len(toggle.orders) == 1
    assert len(toggle.named("CreateOrder")) == 1


async def test_a_lost_card_answer_is_resolved_on_the_next_attempt(
    flow: FlowParts, toggle: FakeToggle, account: FakeTreazureAccount
) -> None:
    toggle.faults.append("lose_before")

    first = await redeem_points_for_gift_card(flow, request("rd-lost"), "task")

    assert first.state == "card_pending" and first.retry_in is not None
    second = await resume_redemption(flow, "rd-lost")
    assert second.state == "card_issued"
    assert len(toggle.orders) == 1 and len(account.bookings) == 1
    assert Ledger(flow.store).get("rd-lost-refund") is None


async def test_a_reference_taken_by_a_plain_card_is_refused(
    flow: FlowParts, account: FakeTreazureAccount
) -> None:
    await issue_gift_card(flow, validate_card_request("5", None, "rd-taken"), "task")
    with pytest.raises(InvalidArgument, match=r"^reference: 'rd-taken' is already used"):
        await redeem_points_for_gift_card(flow, request("rd-taken"), "task")
    assert account.bookings == []


@pytest.mark.parametrize(("arguments", "message"), [
    ((CONTACT, "0", "5", "g@example.com"), "^points: must be more than 0"),
    ((CONTACT, "5", "5.001", "g@example.com"), "^value: must be an amount"),
    ((CONTACT, "5", "5", None), "^email: is required"),
    (("not-a-guid", "5", "5", "g@example.com"), "^contact_id: must be a GUID"),
])
def test_bad_redemptions_are_refused_before_anything(
    arguments: tuple[str, ...], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        validate_redeem_request(*arguments)


def test_a_redemption_reference_leaves_room_for_its_derived_ones() -> None:
    with pytest.raises(InvalidArgument, match=r"^reference: at most 57"):
        validate_redeem_request(CONTACT, "5", "5", "g@example.com", reference="r" * 58)
    made = validate_redeem_request(CONTACT, "5", "5", "g@example.com",
                                   fallback_reference="task-1")
    assert (made.reference, made.description, made.points_cents) == (
        "task-1", "gift card task-1", 500)


async def test_points_booked_then_failed_in_engage_still_count_as_taken(
    flow: FlowParts, toggle: FakeToggle, account: FakeTreazureAccount,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Killed(BaseException):
        pass

    async def killed(parts: FlowParts, reference: str) -> None:
        raise Killed

    monkeypatch.setattr(redeem, "process_order", killed)
    with pytest.raises(Killed):
        await redeem_points_for_gift_card(flow, request("rd-engage"), "task")
    monkeypatch.undo()
    # Meanwhile the drain gave up on Engage for the points row: Treazure still booked it.
    Ledger(flow.store).fail("rd-engage-points", "Engage: ContactNotFound")

    resumed = await resume_redemption(flow, "rd-engage")

    assert resumed.state == "done" and resumed.card_number is not None, resumed
    assert resumed.reason is not None and "did not reach Engage" in resumed.reason
    assert len(account.bookings) == 1 and len(toggle.orders) == 1


async def test_points_not_booked_yet_hold_the_card_back_until_they_are(
    flow: FlowParts, toggle: FakeToggle, account: FakeTreazureAccount
) -> None:
    account.down = 1  # Treazure answers 503: the booking may or may not have happened

    first = await redeem_points_for_gift_card(flow, request("rd-wait"), "task")

    assert first.state == "points_pending" and first.retry_in is not None
    assert toggle.named("CreateOrder") == []
    second = await resume_redemption(flow, "rd-wait")  # the history decides, then one send
    assert second.state == "card_issued"
    assert [b["receiptNr"] for b in account.bookings] == ["rd-wait-points"]
    assert len(toggle.orders) == 1
