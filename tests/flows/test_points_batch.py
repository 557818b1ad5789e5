"""Booking the webhook's received rows many at once (flows/points/batch.py): one round takes
every due row, books each once with its requests in flight together, leaves rows that are
not due, held or not the webhook's, and ends the turn before it reads the ledger (respx
for Treazure, fakeredis, SQLite in memory). A round's requests go on the client's aiohttp
session, which respx does not see: here they take the client's httpx instead, and
test_points_round.py books rounds on aiohttp against a fake Treazure on a real socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
import respx

from tests.support.flows import TREAZURE, FakeRemotes, Parts
from worker.base.point_request import validate_request
from worker.flows.parts import Parts as FlowParts
from worker.flows.points.batch import BOOK_TURN, book_received, take_book_turn
from worker.store.engine import utcnow
from worker.store.ledger import Ledger
from worker.store.pushguard import PushGuard
from worker.systems.treazure.client import PointCalls, TreazureClient

CONTACTS = [f"00000000-0000-0000-0000-0000000000d{k}" for k in range(5)]
ACCOUNTS = f"{TREAZURE}/api/v1.0/LoyaltyVault/Account/"
SETTLE = 7.5


@pytest.fixture(autouse=True)
def rounds_on_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    def own_calls(client: TreazureClient) -> PointCalls:
        return client

    monkeypatch.setattr(TreazureClient, "round_calls", own_calls)


@pytest.fixture
def flow(parts: Parts) -> FlowParts:
    settings = parts.settings.model_copy(update={
        "POINTS_LEASE_SECONDS": 60, "POINTS_SETTLE_SECONDS": SETTLE,
        "POINTS_INLINE_ATTEMPTS": 1})
    return FlowParts(settings, parts.store, parts.redis, parts.treazure, parts.engage,
                     PushGuard(parts.redis, claim_ttl_seconds=60, marker_ttl_seconds=600))


@pytest.fixture
def treazure(remotes: FakeRemotes) -> Iterator[respx.MockRouter]:
    yield remotes.forget[0]


def contact_of(request: httpx.Request) -> str:
    return request.url.path.removeprefix("/api/v1.0/LoyaltyVault/Account/").split("/")[0]


class FakeTreazure:
    """Books each request into an account's history; `drop` answers fail after booking."""

    def __init__(self) -> None:
        self.history: dict[str, list[dict[str, object]]] = {}
        self.in_flight = self.most_in_flight = 0
        self.drop: set[str] = set()
        self.together = 1  # answer once this many bookings are in flight (or 5 s passed)
        self._all_in = asyncio.Event()

    async def book(self, request: httpx.Request) -> httpx.Response:
        contact = contact_of(request)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        if self.in_flight >= self.together:
            self._all_in.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_in.wait(), 5)
        self.in_flight -= 1
        reference = json.loads(request.content)["context"]["receiptNr"]
        self.history.setdefault(contact, []).append({
            "receiptNr": reference, "balance": 15.0, "dateTime": "2026-11-21T08:00:00+00:00",
            "value": 5.0, "type": "Load"})
        if contact in self.drop:
            raise httpx.RemoteProtocolError("server disconnected without sending a response")
        return httpx.Response(200, json={"loyaltyPrograms": [
            {"loyaltyPointDefinitionId": "points", "balance": 15.0}]})

    def read(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=self.history.get(contact_of(request), []))


@pytest.fixture
def books(treazure: respx.MockRouter) -> FakeTreazure:
    fake = FakeTreazure()
    treazure.post(url__regex=rf"{ACCOUNTS}[^/]+/Transaction").mock(side_effect=fake.book)
    treazure.get(url__regex=rf"{ACCOUNTS}[^/]+/LoyaltyPrograms/").mock(side_effect=fake.read)
    return fake


def state(ledger: Ledger, reference: str) -> str:
    row = ledger.get(reference)
    assert row is not None
    return row.state


def recorded(flow: FlowParts, reference: str, contact: str, source: str = "webhook") -> None:
    Ledger(flow.store).record(validate_request(contact, 5, "batch test", reference), source)


async def test_one_round_books_every_due_webhook_row_once_all_in_flight_together(
    flow: FlowParts, books: FakeTreazure
) -> None:
    for k in range(3):
        recorded(flow, f"evt_{k}", CONTACTS[k])
    recorded(flow, "pts-task", CONTACTS[3], source="task")  # booked by its own message
    recorded(flow, "evt_later", CONTACTS[4])
    ledger = Ledger(flow.store)
    ledger.defer(["evt_later"], 3600)  # not due for an hour
    await flow.redis.set(BOOK_TURN, "1")
    books.together = 3

    outcome = await book_received(flow)

    assert (outcome.taken, outcome.settled, outcome.retry_in, outcome.full) == (3, 3, None,
                                                                                False)
    assert await flow.redis.get(BOOK_TURN) is None  # the turn ended: the next row queues
    assert books.most_in_flight == 3
    for k in range(3):
        row = ledger.get(f"evt_{k}")
        assert row is not None and row.state == "booked" and row.attempts == 1
        assert [e["receiptNr"] for e in books.history[CONTACTS[k]]] == [f"evt_{k}"]
    assert state(ledger, "pts-task") == state(ledger, "evt_later") == "received"
    assert CONTACTS[3] not in books.history and CONTACTS[4] not in books.history

    again = await book_received(flow)  # nothing left that is due
    assert again.taken == 0


async def test_a_round_takes_at_most_its_limit_and_says_more_may_wait(
    flow: FlowParts, books: FakeTreazure
) -> None:
    for k in range(3):
        recorded(flow, f"evt_{k}", CONTACTS[k])

    first = await book_received(flow, limit=2)
    # The task queues the next round only with the turn (a row may have queued one).
    assert await take_book_turn(flow.redis) and not await take_book_turn(flow.redis)
    second = await book_received(flow, limit=2)

    assert (first.taken, first.full) == (2, True)
    assert (second.taken, second.full) == (1, False)
    assert all(len(entries) == 1 for entries in books.history.values())


async def test_an_ambiguous_answer_lets_its_row_go_for_the_pause_and_the_others_book(
    flow: FlowParts, books: FakeTreazure
) -> None:
    recorded(flow, "evt_ok", CONTACTS[0])
    recorded(flow, "evt_dropped", CONTACTS[1])
    books.drop.add(CONTACTS[1])

    outcome = await book_received(flow)

    assert (outcome.taken, outcome.settled) == (2, 1)
    assert outcome.retry_in is not None and SETTLE - 1 < outcome.retry_in <= SETTLE
    ledger = Ledger(flow.store)
    dropped = ledger.get("evt_dropped")
    assert dropped is not None and dropped.state == "received" and dropped.uncertain
    assert dropped.lease_until is None and dropped.next_attempt_at is not None
    assert state(ledger, "evt_ok") == "booked"
    assert (await book_received(flow)).taken == 0  # not due before the pause is over

    ledger.defer(["evt_dropped"], -1)  # the pause is over
    books.drop.clear()
    later = await book_received(flow)

    assert (later.taken, later.settled) == (1, 1)
    assert state(ledger, "evt_dropped") == "booked"
    # The history showed the first send booked: nothing was sent again.
    assert [e["receiptNr"] for e in books.history[CONTACTS[1]]] == ["evt_dropped"]


async def test_a_row_another_worker_holds_is_left_alone(
    flow: FlowParts, books: FakeTreazure
) -> None:
    recorded(flow, "evt_held", CONTACTS[0])
    ledger = Ledger(flow.store)
    held = ledger.claim("evt_held", 60)
    assert held is not None

    assert (await book_received(flow)).taken == 0
    assert books.history == {}
    row = ledger.get("evt_held")
    assert row is not None and row.lease_until == held.lease_until
    assert held.lease_until is not None and held.lease_until > utcnow() + timedelta(seconds=30)
