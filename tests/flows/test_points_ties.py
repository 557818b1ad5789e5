"""Two bookings of one contact in the same millisecond: Treazure's times carry
milliseconds, so their `mutatedAt` ties, and neither our booking order nor the amounts say
which balance is the later one. The drain asks Treazure's history, which lists movements
oldest first, for the balance after the last movement at that time."""

from __future__ import annotations

from datetime import datetime

import httpx
import pytest

from tests.support.flows import TREAZURE, FakeRemotes, Parts
from worker.base.money import utc_micros
from worker.base.point_request import validate_request
from worker.flows.parts import Parts as FlowParts
from worker.flows.points.drain import drain
from worker.store.ledger import Ledger
from worker.store.pushguard import PushGuard

A = "00000000-0000-0000-0000-00000000000a"
TIE = "2026-11-21T09:00:00.053Z"
HISTORY = f"{TREAZURE}/api/v1.0/LoyaltyVault/Account/{A}/LoyaltyPrograms/points/History"


def entry(reference: str, amount: float, balance: float) -> dict[str, object]:
    return {"dateTime": TIE, "amount": amount, "transactionType": "Load", "expiresAt": None,
            "balance": balance, "comment": "bonus", "operatorId": "pointsync",
            "shopId": None, "posId": None, "receiptNr": reference, "properties": {}}


def tied_at() -> int:
    return utc_micros(datetime.fromisoformat(TIE))


@pytest.fixture
def flow(parts: Parts) -> FlowParts:
    guard = PushGuard(parts.redis, claim_ttl_seconds=60, marker_ttl_seconds=600)
    return FlowParts(parts.settings, parts.store, parts.redis, parts.treazure, parts.engage,
                     guard)


def book(ledger: Ledger, reference: str, cents: int) -> None:
    ledger.record(validate_request(A, 5, "bonus", reference), "task")
    ledger.booked(reference, cents, tied_at())


@pytest.fixture
def two_tied(flow: FlowParts) -> Ledger:
    """Booked in our order 'second' then 'first', both at TIE."""
    ledger = Ledger(flow.store)
    book(ledger, "ref-second", 140_000)
    book(ledger, "ref-first", 150_000)
    return ledger


def answer_history(remotes: FakeRemotes, *entries: dict[str, object]) -> list[httpx.Request]:
    seen: list[httpx.Request] = []

    def history(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=list(entries))

    remotes.forget[0].get(HISTORY).mock(side_effect=history)
    return seen


async def test_a_tie_between_two_bookings_pushes_the_balance_treazure_booked_last(
    flow: FlowParts, remotes: FakeRemotes, two_tied: Ledger
) -> None:
    # Treazure booked 'first' then 'second'.
    answer_history(remotes, entry("ref-first", 5, 1500.0), entry("ref-second", -100, 1400.0))
    assert await drain(flow) == 2
    assert remotes.engage == {A: 1400.0}
    state = flow.store.contact_states([A])[A]
    assert (state.sent_cents, state.sent_mutated_us) == (140_000, tied_at())
    assert {two_tied.get(r).state for r in ("ref-first", "ref-second")} == {"applied"}


async def test_a_booking_tied_with_what_engage_holds_is_not_pushed_when_treazure_booked_it_first(
    flow: FlowParts, remotes: FakeRemotes
) -> None:
    ledger = Ledger(flow.store)
    flow.store.save_contact_states([(A, 150_000, tied_at(), 1)])  # Engage was sent 1500 at TIE
    book(ledger, "ref-early", 140_000)
    answer_history(remotes, entry("ref-early", -100, 1400.0), entry("ref-late", 100, 1500.0))
    assert await drain(flow) == 1
    assert remotes.pushed_contacts() == []
    assert ledger.get("ref-early").state == "applied"
    assert "newer balance" in (ledger.get("ref-early").reason or "")


async def test_a_booking_tied_with_what_engage_holds_is_pushed_when_treazure_booked_it_last(
    flow: FlowParts, remotes: FakeRemotes
) -> None:
    ledger = Ledger(flow.store)
    flow.store.save_contact_states([(A, 150_000, tied_at(), 1)])
    book(ledger, "ref-late", 140_000)
    answer_history(remotes, entry("ref-early", 100, 1500.0), entry("ref-late", -100, 1400.0))
    assert await drain(flow) == 1
    assert remotes.engage == {A: 1400.0}


async def test_a_tie_waits_while_the_history_is_unreadable(
    flow: FlowParts, remotes: FakeRemotes, two_tied: Ledger
) -> None:
    remotes.forget[0].get(HISTORY).respond(503, text="down")
    assert await drain(flow, budget_seconds=0.5) == 0
    assert remotes.pushed_contacts() == []
    assert {two_tied.get(r).state for r in ("ref-first", "ref-second")} == {"booked"}
    assert all(two_tied.get(r).next_attempt_at for r in ("ref-first", "ref-second"))


async def test_the_same_balance_twice_at_one_time_needs_no_history(
    flow: FlowParts, remotes: FakeRemotes
) -> None:
    ledger = Ledger(flow.store)
    book(ledger, "ref-up", 150_000)
    book(ledger, "ref-down", 150_000)  # +x then -x within the millisecond, say
    seen = answer_history(remotes)
    assert await drain(flow) == 2
    assert remotes.engage == {A: 1500.0}
    assert seen == []
