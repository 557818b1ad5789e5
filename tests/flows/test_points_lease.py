"""A point transaction's lease is short and renewed while the booking runs: a slow booking
keeps it, a lease taken by someone else stops the work before anything more is sent, and a
lease that cannot be renewed cuts the request short before it could run out (respx for
Treazure, fakeredis, SQLite in memory)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import respx
from sqlalchemy import update
from sqlalchemy.exc import OperationalError

from tests.support.flows import TREAZURE, FakeRemotes, Parts
from worker.base.point_request import validate_request
from worker.flows.parts import Parts as FlowParts
from worker.flows.points.booking import process
from worker.store.engine import utcnow
from worker.store.ledger import Ledger, point_transactions
from worker.store.pushguard import PushGuard

CONTACT = "00000000-0000-0000-0000-0000000000c1"
ACCOUNT = f"{TREAZURE}/api/v1.0/LoyaltyVault/Account/{CONTACT}"
LEASE = 0.6  # seconds: renewed every 0.2 s


@pytest.fixture
def flow(parts: Parts) -> FlowParts:
    settings = parts.settings.model_copy(update={
        "POINTS_LEASE_SECONDS": LEASE, "POINTS_SETTLE_SECONDS": 0.0,
        "POINTS_INLINE_ATTEMPTS": 1})
    return FlowParts(settings, parts.store, parts.redis, parts.treazure, parts.engage,
                     PushGuard(parts.redis, claim_ttl_seconds=60, marker_ttl_seconds=600))


@pytest.fixture
def treazure(remotes: FakeRemotes) -> Iterator[respx.MockRouter]:
    """The flow fixtures' router (token, balances job), to add this account's routes to."""
    yield remotes.forget[0]


def record(flow: FlowParts, reference: str) -> Ledger:
    ledger = Ledger(flow.store)
    ledger.record(validate_request(CONTACT, 5, "lease test", reference), "task")
    return ledger


def history_with(reference: str) -> httpx.Response:
    return httpx.Response(200, json=[{
        "receiptNr": reference, "balance": 15.0, "dateTime": "2026-11-21T08:00:00+00:00",
        "value": 5.0, "type": "Load"}])


async def test_a_booking_slower_than_the_lease_keeps_it_and_books_once(
    flow: FlowParts, treazure: respx.MockRouter
) -> None:
    ledger = record(flow, "ref-slow")
    seen_free: list[bool] = []

    async def slow_booking(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(LEASE * 3)  # three leases long: only renewals keep the row
        seen_free.append(ledger.claim("ref-slow", LEASE) is not None)  # a second worker
        return httpx.Response(200, json={"loyaltyPrograms": [
            {"loyaltyPointDefinitionId": "points", "balance": 15.0}]})

    booking = treazure.post(f"{ACCOUNT}/Transaction").mock(side_effect=slow_booking)
    treazure.get(url__startswith=f"{ACCOUNT}/LoyaltyPrograms").mock(
        return_value=history_with("ref-slow"))

    outcome = await process(flow, "ref-slow")

    assert outcome.state == "booked" and outcome.attempts == 1
    assert booking.call_count == 1
    assert seen_free == [False]  # the row stayed ours although the first lease ran out
    assert ledger.get("ref-slow").lease_until is None  # booked lets go of it


async def test_a_lease_taken_by_another_worker_stops_the_work_before_it_sends(
    flow: FlowParts, treazure: respx.MockRouter
) -> None:
    ledger = record(flow, "ref-stolen")
    # The last send may have been booked: the history decides, after a settle pause.
    with flow.store.engine.begin() as conn:
        conn.execute(update(point_transactions).values(uncertain=True, attempts=1))
    slow = flow.settings.model_copy(update={"POINTS_SETTLE_SECONDS": LEASE * 4})
    history = treazure.get(url__startswith=f"{ACCOUNT}/LoyaltyPrograms").mock(
        return_value=httpx.Response(200, json=[]))
    booking = treazure.post(f"{ACCOUNT}/Transaction").mock(
        return_value=httpx.Response(200, json={}))

    work = asyncio.ensure_future(process(
        FlowParts(slow, flow.store, flow.redis, flow.treazure, flow.engage, flow.guard),
        "ref-stolen"))
    await asyncio.sleep(0)  # the task claims the row before its first pause
    assert ledger.get("ref-stolen").lease_until is not None
    thief = utcnow() + timedelta(hours=1)  # as if the lease had run out and been taken
    with flow.store.engine.begin() as conn:
        conn.execute(update(point_transactions).values(lease_until=thief))

    outcome = await asyncio.wait_for(work, LEASE * 3)  # well before the settle pause ends

    assert outcome.state == "received"
    assert history.call_count == 0 and booking.call_count == 0
    assert ledger.get("ref-stolen").lease_until == thief  # the other holder's, untouched


async def test_a_lease_that_cannot_be_renewed_cuts_the_request_short(
    flow: FlowParts, treazure: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = record(flow, "ref-cut")
    renew = Ledger.renew
    database_down = False

    def renew_unless_down(self: Ledger, *args: object) -> datetime:
        if database_down:
            raise OperationalError("UPDATE", {}, Exception("database unreachable"))
        return renew(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Ledger, "renew", renew_unless_down)
    cut: list[datetime] = []
    lease_at_send: list[datetime] = []

    async def hanging_booking(request: httpx.Request) -> httpx.Response:
        nonlocal database_down
        lease_at_send.append(ledger.get("ref-cut").lease_until)
        database_down = True  # from now on no renewal succeeds
        try:
            await asyncio.sleep(3600)
        finally:
            cut.append(datetime.now(UTC))
        raise AssertionError("not reached")

    treazure.post(f"{ACCOUNT}/Transaction").mock(side_effect=hanging_booking)
    database_down = False
    outcome = await asyncio.wait_for(process(flow, "ref-cut"), LEASE * 5)

    assert outcome.state == "received"
    assert cut and cut[0] < lease_at_send[0]  # no request of ours outlived the lease
    row = ledger.get("ref-cut")
    assert row.uncertain and row.attempts == 1  # the history decides before any resend
    assert row.lease_until is None and row.next_attempt_at is not None  # due again
