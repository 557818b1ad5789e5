"""The relay's flow on a real (SQLite) store with in-memory destinations: each event
delivered once, in the source's creation order per subject, whatever arrives late, fails
or is lost; filtering; the faults of each class; the sweep; replay."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from tests.support.relays import (
    FakeAtreemo,
    FakeContlo,
    age,
    make_due,
    nector_body,
    nector_headers,
    server_error,
    toggle_body,
    toggle_headers,
)
from worker.base.http import Ambiguous, Rejected, Retryable
from worker.flows.relays.deliver import deliver_subject
from worker.flows.relays.destinations import Atreemo, Contlo, Destination
from worker.flows.relays.receive import NECTOR, TOGGLE, receive
from worker.flows.relays.sweep import lost_subjects, replay, sweep
from worker.store.database import Store
from worker.store.engine import utcnow
from worker.store.relays import Relays

DAY = 86400.0


@pytest.fixture
def relays(store: Store) -> Relays:
    return Relays(store)


@pytest.fixture
def atreemo() -> FakeAtreemo:
    return FakeAtreemo()


@pytest.fixture
def contlo() -> FakeContlo:
    return FakeContlo()


def destinations(atreemo: FakeAtreemo, contlo: FakeContlo | None = None,
                 sends_emails: bool = False) -> dict[str, Destination]:
    return {"atreemo": Atreemo(atreemo, sends_emails), "contlo": Contlo(contlo or FakeContlo())}


def toggle(store: Store, event_id: int, kind: str = "card.balance_adjusted", **shape: int) -> str:
    body = toggle_body(event_id, kind, **shape)
    received = receive(store, TOGGLE, body, toggle_headers(body))
    return received.subject


def key(event_id: int) -> str:
    return f"toggle:{event_id}:atreemo"


async def run(relays: Relays, dests: dict[str, Destination], subject: str,
              source: str = TOGGLE, max_age: float = DAY):
    return await deliver_subject(relays, dests, source, subject, max_age_seconds=max_age)


async def test_out_of_order_arrivals_reach_atreemo_in_creation_order(
        store: Store, relays: Relays, atreemo: FakeAtreemo) -> None:
    # Toggle created 570, 571, 572 (seconds 1, 2, 3); they arrive 572, 570, 571.
    for event_id, second in ((572, 3), (570, 1), (571, 2)):
        subject = toggle(store, event_id, second=second)
    assert subject == "card:501"
    outcome = await run(relays, destinations(atreemo), subject)
    assert atreemo.ids() == [570, 571, 572]
    assert [state for _, state in outcome.settled] == ["delivered"] * 3
    # The envelope went byte for byte.
    assert atreemo.sent[0] == toggle_body(570, second=1)


async def test_a_later_event_waits_while_an_earlier_one_is_retried(
        store: Store, relays: Relays, atreemo: FakeAtreemo) -> None:
    subject = toggle(store, 570, second=1)
    toggle(store, 571, second=2)
    atreemo.fail_next(server_error())
    first = await run(relays, destinations(atreemo), subject)
    assert first.settled == [(key(570), "received")] and first.retry_at is not None
    assert atreemo.ids() == [570]  # 571 not sent past the failing 570
    again = await run(relays, destinations(atreemo), subject)
    assert again.settled == [] and again.retry_at == first.retry_at  # not due yet
    make_due(relays)
    await run(relays, destinations(atreemo), subject)
    assert atreemo.ids() == [570, 570, 571]
    assert relays.get(key(570)).attempts == 2  # type: ignore[union-attr]


async def test_an_earlier_event_arriving_during_retries_goes_first(
        store: Store, relays: Relays, atreemo: FakeAtreemo) -> None:
    subject = toggle(store, 571, second=2)
    atreemo.fail_next(server_error())
    await run(relays, destinations(atreemo), subject)
    toggle(store, 570, second=1)  # created earlier, arrived later
    make_due(relays)
    await run(relays, destinations(atreemo), subject)
    assert atreemo.ids() == [571, 570, 571]


async def test_a_failing_subject_holds_up_no_other_and_a_failed_event_is_set_aside(
        store: Store, relays: Relays, atreemo: FakeAtreemo) -> None:
    slow = toggle(store, 570, second=1, card=1)
    toggle(store, 571, second=2, card=1)
    other = toggle(store, 572, second=3, card=2)
    atreemo.fail_next(server_error())
    await run(relays, destinations(atreemo), slow)
    await run(relays, destinations(atreemo), other)
    assert atreemo.ids() == [570, 572]
    assert relays.get(key(572)).state == "delivered"  # type: ignore[union-attr]
    # 570 refused for good: set aside, and the card's later event goes on.
    make_due(relays)
    atreemo.fail_next(Rejected("atreemo", "HTTP 400: unknown card", 400))
    outcome = await run(relays, destinations(atreemo), slow)
    assert outcome.settled == [(key(570), "failed"), (key(571), "delivered")]
    failed = relays.get(key(570))
    assert failed is not None and failed.reason == "HTTP 400: unknown card"
    assert failed.attempts == 2  # refused at once, not retried


@pytest.mark.parametrize("sends_emails", [False, True])
async def test_email_triggers_are_filtered_unless_atreemo_sends_emails(
        store: Store, relays: Relays, atreemo: FakeAtreemo, sends_emails: bool) -> None:
    subject = toggle(store, 570, "order.created", second=1)
    toggle(store, 571, "order.send_receipt_email", second=2)
    toggle(store, 572, "order.cancelled", second=3)
    await run(relays, destinations(atreemo, sends_emails=sends_emails), subject)
    assert subject == "order:9001"
    assert atreemo.ids() == ([570, 571, 572] if sends_emails else [570, 572])
    receipt = relays.get(key(571))
    assert receipt is not None
    assert receipt.state == ("delivered" if sends_emails else "filtered")


async def test_types_outside_the_crm_integration_are_recorded_and_filtered(
        store: Store, relays: Relays, atreemo: FakeAtreemo) -> None:
    subject = toggle(store, 570, "card.card_reference_updated")
    await run(relays, destinations(atreemo, sends_emails=True), subject)
    assert atreemo.sent == []
    row = relays.get(key(570))
    assert row is not None and row.state == "filtered"
    assert relays.event(TOGGLE, "570") is not None


async def test_a_nector_event_becomes_one_contlo_call(
        store: Store, relays: Relays, atreemo: FakeAtreemo, contlo: FakeContlo) -> None:
    body = nector_body()
    received = receive(store, NECTOR, body, nector_headers(body, "d-1"))
    assert received.subject == "customer:cust-1"
    await run(relays, destinations(atreemo, contlo), received.subject, NECTOR)
    assert [(c["event"], c["email"], c["phone"]) for c in contlo.sent] == [
        ("Wallet Coins Rewarded", "a@b.in", "+919800000000")]
    assert relays.get("nector:d-1:contlo").state == "delivered"  # type: ignore[union-attr]


async def test_a_nector_event_without_email_or_phone_fails_with_no_call(
        store: Store, relays: Relays, atreemo: FakeAtreemo, contlo: FakeContlo) -> None:
    body = nector_body(email="", mobile="")
    received = receive(store, NECTOR, body, nector_headers(body, "d-2"))
    await run(relays, destinations(atreemo, contlo), received.subject, NECTOR)
    assert contlo.sent == []
    row = relays.get("nector:d-2:contlo")
    assert row is not None and row.state == "failed" and row.attempts == 0
    assert row.reason is not None and "user_email" in row.reason


async def test_a_429_is_retried_after_its_retry_after(
        store: Store, relays: Relays, atreemo: FakeAtreemo) -> None:
    subject = toggle(store, 570)
    atreemo.fail_next(Retryable("atreemo", "HTTP 429: slow down", 429, retry_after=42.0))
    before = utcnow()
    outcome = await run(relays, destinations(atreemo), subject)
    row = relays.get(key(570))
    assert row is not None and row.state == "received" and row.next_attempt_at is not None
    assert before + timedelta(seconds=42) <= row.next_attempt_at <= utcnow() + timedelta(
        seconds=42)
    assert outcome.retry_at == row.next_attempt_at and row.reason == "HTTP 429: slow down"


async def test_server_errors_back_off_longer_each_time(
        store: Store, relays: Relays, atreemo: FakeAtreemo) -> None:
    subject = toggle(store, 570)
    pauses = []
    for _ in range(4):
        atreemo.fail_next(server_error())
        started = utcnow()
        outcome = await run(relays, destinations(atreemo), subject)
        assert outcome.retry_at is not None
        pauses.append((outcome.retry_at - started).total_seconds())
        make_due(relays)
    # Jittered between half and all of 2, 4, 8, 16 s: the fourth is beyond the first's cap.
    assert pauses[3] > 2 * 2.0 >= pauses[0]
    await run(relays, destinations(atreemo), subject)
    assert relays.get(key(570)).state == "delivered"  # type: ignore[union-attr]


async def test_a_lost_answer_is_retried_and_marked_ambiguous(
        store: Store, relays: Relays, atreemo: FakeAtreemo) -> None:
    subject = toggle(store, 570)
    atreemo.fail_next(Ambiguous("atreemo", "read timeout"))
    await run(relays, destinations(atreemo), subject)
    make_due(relays)
    await run(relays, destinations(atreemo), subject)
    row = relays.get(key(570))
    assert row is not None and (row.state, row.ambiguous, row.attempts) == ("delivered", 1, 2)
    assert not row.uncertain


async def test_a_worker_dead_mid_send_leaves_a_resend_counted_ambiguous(
        store: Store, relays: Relays, atreemo: FakeAtreemo) -> None:
    subject = toggle(store, 570)
    claimed = relays.outbox.claim(key(570), 0.0)  # a lease that runs out at once
    assert claimed is not None
    relays.outbox.mark_uncertain(key(570), claimed.lease_until)  # ...then it died
    assert [s for s in await sweep(relays, destinations(atreemo), max_age_seconds=DAY)
            if s.subject == subject]
    row = relays.get(key(570))
    assert row is not None and (row.state, row.ambiguous) == ("delivered", 1)


async def test_transient_failures_past_the_max_age_fail_the_delivery(
        store: Store, relays: Relays, atreemo: FakeAtreemo) -> None:
    subject = toggle(store, 570)
    atreemo.fail_next(server_error())
    await run(relays, destinations(atreemo), subject, max_age=DAY)
    assert relays.get(key(570)).state == "received"  # type: ignore[union-attr]
    age(relays, DAY + 1)
    make_due(relays)
    atreemo.fail_next(server_error())
    await run(relays, destinations(atreemo), subject, max_age=DAY)
    row = relays.get(key(570))
    assert row is not None and row.state == "failed"
    assert row.reason is not None and row.reason.startswith("HTTP 503: unavailable")
    assert "given up" in row.reason


async def test_the_sweep_delivers_an_event_whose_task_was_lost(
        store: Store, relays: Relays, atreemo: FakeAtreemo) -> None:
    subject = toggle(store, 570)
    assert lost_subjects(relays) == []  # just recorded: its task may still come
    age(relays, 3600)
    assert lost_subjects(relays) == [(TOGGLE, subject)]
    await sweep(relays, destinations(atreemo), max_age_seconds=DAY)
    assert atreemo.ids() == [570]
    assert lost_subjects(relays) == []


async def test_replay_sends_a_failed_delivery_again(
        store: Store, relays: Relays, atreemo: FakeAtreemo) -> None:
    subject = toggle(store, 570)
    atreemo.fail_next(Rejected("atreemo", "HTTP 401: bad signature", 401))
    await run(relays, destinations(atreemo), subject)
    assert relays.get(key(570)).state == "failed"  # type: ignore[union-attr]
    row = replay(relays, key(570))
    assert row is not None and (row.state, row.attempts, row.reason) == ("received", 0, None)
    await run(relays, destinations(atreemo), subject)
    assert atreemo.ids() == [570, 570]
    assert relays.get(key(570)).state == "delivered"  # type: ignore[union-attr]
    assert replay(relays, key(570)).state == "delivered"  # type: ignore[union-attr]


async def test_a_repeated_event_is_recorded_and_delivered_once(
        store: Store, relays: Relays, atreemo: FakeAtreemo) -> None:
    body = toggle_body(570)
    first = receive(store, TOGGLE, body, toggle_headers(body))
    again = receive(store, TOGGLE, body, toggle_headers(body))
    assert first.recorded and not again.recorded
    await run(relays, destinations(atreemo), first.subject)
    receive(store, TOGGLE, body, toggle_headers(body))
    await run(relays, destinations(atreemo), first.subject)
    assert atreemo.ids() == [570]


async def test_an_unexpected_error_mid_send_is_retried_and_the_resend_counted_ambiguous(
        store: Store, relays: Relays, atreemo: FakeAtreemo) -> None:
    subject = toggle(store, 570)
    atreemo.fail_next(RuntimeError("redis: connection refused"))
    await run(relays, destinations(atreemo), subject)
    row = relays.get(key(570))
    assert row is not None and (row.state, row.uncertain) == ("received", True)
    make_due(relays)
    await run(relays, destinations(atreemo), subject)
    row = relays.get(key(570))
    assert row is not None and (row.state, row.ambiguous) == ("delivered", 1)


class SlowAtreemo(FakeAtreemo):
    """Holds each send until `release` is set; `started` is set when one begins."""

    def __init__(self) -> None:
        super().__init__()
        self.started, self.release = asyncio.Event(), asyncio.Event()
        self.cancelled = 0

    async def deliver(self, raw_body: bytes) -> None:
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self._answer(raw_body)


async def slow_send(store: Store, relays: Relays) -> tuple[SlowAtreemo, asyncio.Task[Any]]:
    """Event 570's delivery under a 0.6 s lease, its send held by Atreemo until released."""
    subject = toggle(store, 570)
    slow = SlowAtreemo()
    sending = asyncio.create_task(deliver_subject(
        relays, destinations(slow), TOGGLE, subject, max_age_seconds=DAY, lease_seconds=0.6))
    await slow.started.wait()
    return slow, sending


async def test_a_send_longer_than_the_lease_keeps_it_renewed_and_nobody_else_claims(
        store: Store, relays: Relays) -> None:
    slow, sending = await slow_send(store, relays)
    first = relays.get(key(570))
    assert first is not None and first.uncertain and first.lease_until is not None
    # Three leases' time later the first worker still holds it: renewed, not run out.
    for _ in range(6):
        await asyncio.sleep(0.3)
        assert relays.outbox.claim(key(570), 5.0) is None
        assert relays.lost_subjects(stale_seconds=0) == []
    renewed = relays.get(key(570))
    assert renewed is not None and renewed.lease_until > first.lease_until
    slow.release.set()
    outcome = await sending
    assert outcome.settled == [(key(570), "delivered")]
    row = relays.get(key(570))
    assert row is not None and (row.attempts, row.ambiguous, row.uncertain) == (1, 0, False)
    assert slow.ids() == [570]


async def test_a_send_whose_lease_is_taken_away_is_cut_short_and_left_uncertain(
        store: Store, relays: Relays) -> None:
    slow, sending = await slow_send(store, relays)
    # Another worker's lease replaces ours (ours ran out while this process was stopped).
    relays.outbox.move(key(570), None, lease_until=utcnow() + timedelta(seconds=30))
    outcome = await asyncio.wait_for(sending, 5)
    assert outcome.busy and outcome.settled == []
    assert slow.cancelled == 1 and slow.sent == []
    row = relays.get(key(570))
    # Committed before the send: whoever sends next counts it as a possible second send.
    assert row is not None and row.state == "received" and row.uncertain
