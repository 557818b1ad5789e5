"""An ambiguous booking answer does not hold the worker for the settle pause: the row is let
go, due again after the pause, and the task is queued again for then (respx for Treazure,
fakeredis, SQLite in memory). The pause itself is kept: the next attempt reads the history
only once the pause has passed since the send."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import respx
from sqlalchemy import update

from tests.support.flows import TREAZURE, FakeRemotes, Parts
from worker.base.point_request import validate_request
from worker.faces.celery import tasks
from worker.flows.parts import Parts as FlowParts
from worker.flows.points.booking import process
from worker.flows.points.record import REQUEUE_MAX_SECONDS, Outcome
from worker.store.engine import utcnow
from worker.store.ledger import Ledger, point_transactions
from worker.store.pushguard import PushGuard

CONTACT = "00000000-0000-0000-0000-0000000000c2"
ACCOUNT = f"{TREAZURE}/api/v1.0/LoyaltyVault/Account/{CONTACT}"
SETTLE = 7.5  # seconds: long, so a pause slept inside the task would show
LEASE = 60  # the lease keeper sleeps LEASE / 3 between renewals


@pytest.fixture
def flow(parts: Parts) -> FlowParts:
    settings = parts.settings.model_copy(update={
        "POINTS_LEASE_SECONDS": LEASE, "POINTS_SETTLE_SECONDS": SETTLE,
        "POINTS_INLINE_ATTEMPTS": 3})
    return FlowParts(settings, parts.store, parts.redis, parts.treazure, parts.engage,
                     PushGuard(parts.redis, claim_ttl_seconds=60, marker_ttl_seconds=600))


@pytest.fixture
def treazure(remotes: FakeRemotes) -> Iterator[respx.MockRouter]:
    yield remotes.forget[0]


@pytest.fixture
def pauses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every pause the work sleeps (the lease keeper's aside), which then ends at once."""
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(delay: float, result: Any = None) -> Any:
        if delay == LEASE / 3:  # the keeper: really waits (the test ends long before)
            return await real_sleep(delay, result)
        slept.append(delay)
        return await real_sleep(0, result)

    monkeypatch.setattr(asyncio, "sleep", recording_sleep)
    return slept


def record(flow: FlowParts, reference: str) -> Ledger:
    ledger = Ledger(flow.store)
    ledger.record(validate_request(CONTACT, 5, "settle test", reference), "task")
    return ledger


def history_with(reference: str) -> httpx.Response:
    return httpx.Response(200, json=[{
        "receiptNr": reference, "balance": 15.0, "dateTime": "2026-11-21T08:00:00+00:00",
        "value": 5.0, "type": "Load"}])


def seconds_until_due(ledger: Ledger, reference: str) -> float:
    row = ledger.get(reference)
    assert row is not None and row.next_attempt_at is not None
    return (row.next_attempt_at - utcnow()).total_seconds()


@pytest.mark.parametrize("answer", [
    httpx.Response(503, text="busy"),
    httpx.RemoteProtocolError("server disconnected without sending a response"),
])
async def test_an_ambiguous_answer_lets_the_row_go_until_the_pause_is_over(
    flow: FlowParts, treazure: respx.MockRouter, pauses: list[float], answer: Any
) -> None:
    ledger = record(flow, "ref-ambiguous")
    booking = treazure.post(f"{ACCOUNT}/Transaction")
    if isinstance(answer, Exception):
        booking.mock(side_effect=answer)
    else:
        booking.mock(return_value=answer)
    history = treazure.get(url__startswith=f"{ACCOUNT}/LoyaltyPrograms").mock(
        return_value=httpx.Response(200, json=[]))

    outcome = await process(flow, "ref-ambiguous")

    assert pauses == []  # nothing slept inside the task
    assert booking.call_count == 1 and history.call_count == 0
    assert outcome.state == "received" and outcome.retry_in == SETTLE
    row = ledger.get("ref-ambiguous")
    assert row.uncertain and row.attempts == 1  # the history decides before any resend
    assert row.lease_until is None  # free for the queued call (or the sweep)
    assert SETTLE - 1 < seconds_until_due(ledger, "ref-ambiguous") <= SETTLE


async def test_an_uncertain_row_taken_early_waits_out_only_the_rest_then_reads_the_history(
    flow: FlowParts, treazure: respx.MockRouter, pauses: list[float]
) -> None:
    ledger = record(flow, "ref-early")
    sent_at = utcnow() - timedelta(seconds=2)
    with flow.store.engine.begin() as conn:
        conn.execute(update(point_transactions).values(
            uncertain=True, attempts=1, first_sent_at=sent_at, updated_at=sent_at))
    booking = treazure.post(f"{ACCOUNT}/Transaction").mock(
        return_value=httpx.Response(200, json={}))
    history = treazure.get(url__startswith=f"{ACCOUNT}/LoyaltyPrograms").mock(
        return_value=history_with("ref-early"))

    outcome = await process(flow, "ref-early")  # a redelivery, say: 2 s too early

    # Only the rest of the pause, once (not queued again: that would restart the pause).
    assert len(pauses) == 1 and SETTLE - 3 < pauses[0] <= SETTLE - 2
    assert history.call_count == 1 and booking.call_count == 0
    assert outcome.state == "booked" and outcome.retry_in is None
    assert ledger.get("ref-early").attempts == 1


async def test_once_the_pause_is_over_the_history_resolves_the_row_without_a_resend(
    flow: FlowParts, treazure: respx.MockRouter, pauses: list[float]
) -> None:
    ledger = record(flow, "ref-settled")
    sent_at = utcnow() - timedelta(seconds=SETTLE)
    with flow.store.engine.begin() as conn:
        conn.execute(update(point_transactions).values(
            uncertain=True, attempts=1, first_sent_at=sent_at, updated_at=sent_at))
    booking = treazure.post(f"{ACCOUNT}/Transaction").mock(
        return_value=httpx.Response(200, json={}))
    treazure.get(url__startswith=f"{ACCOUNT}/LoyaltyPrograms").mock(
        return_value=history_with("ref-settled"))

    outcome = await process(flow, "ref-settled")

    assert outcome.state == "booked" and outcome.retry_in is None
    assert booking.call_count == 0 and pauses == []
    assert ledger.get("ref-settled").attempts == 1


async def test_a_row_left_for_later_is_due_again_soon_and_the_pause_doubles(
    flow: FlowParts, treazure: respx.MockRouter, pauses: list[float]
) -> None:
    ledger = record(flow, "ref-busy")
    treazure.post(f"{ACCOUNT}/Transaction").mock(return_value=httpx.Response(429))

    first = await process(flow, "ref-busy")  # three sends, all refused
    assert ledger.get("ref-busy").attempts == 3 and len(pauses) == 2  # the short inline ones
    second = await process(flow, "ref-busy")

    assert first.retry_in is not None and second.retry_in is not None
    assert first.retry_in < 10  # not 40 s: the retry pause starts small …
    assert second.retry_in == first.retry_in * 2 ** 3  # … and doubles with each attempt
    assert not ledger.get("ref-busy").uncertain


def test_the_task_queues_itself_again_for_when_the_row_is_due(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    outcome = Outcome("ref-task", "received", CONTACT, "5", None, "503", 1,
                      retry_in=SETTLE)
    monkeypatch.setattr(tasks, "run_with_parts", lambda work: outcome)
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(tasks.add_points, "apply_async", lambda **kw: sent.append(kw))

    result = tasks.add_points(CONTACT, "5", "settle test", "ref-task", "webhook")

    assert result["state"] == "received"
    assert sent == [{"kwargs": {"contact_id": CONTACT, "amount": "5",
                                "description": "settle test", "reference": "ref-task",
                                "source": "webhook"},
                     "countdown": SETTLE, "ignore_result": True}]


def test_the_task_leaves_a_long_pause_to_the_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    outcome = Outcome("ref-late", "received", CONTACT, "5", None, "429", 9,
                      retry_in=REQUEUE_MAX_SECONDS + 1)
    monkeypatch.setattr(tasks, "run_with_parts", lambda work: outcome)
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(tasks.add_points, "apply_async", lambda **kw: sent.append(kw))

    tasks.add_points(CONTACT, "5", "settle test", "ref-late")

    assert sent == []
