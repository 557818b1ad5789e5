"""The relays through crashes and outages, on real processes: a pool child or a whole worker
SIGKILLed while Atreemo holds its request, and Redis stopped while events arrive.

What the design promises (worker/flows/relays/deliver.py): the row is marked uncertain
before the request leaves, so a worker that dies mid-send leaves it uncertain; once its
lease has run out another worker (taken there by the sweep) sends it again and counts that
send ambiguous on the row; the subject's later events follow it, in order; nothing else is
sent twice. The relay's lease (20 s) and the sweep's staleness (60 s) are not settings:
these tests move the rows' clocks (expire_leases, age) instead of waiting for them."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from celery import Celery

from sims.harness import CeleryProcess, WebProcess
from sims.senders import nector_event
from tests.support.integration import only_pool_child, wait_for
from tests.support.redis_server import RedisServer
from tests.support.relays import (
    RelaySims,
    about_card,
    accepted,
    age,
    all_final,
    card_event,
    delivery,
    event_id,
    expire_leases,
    post_nector,
    start_relay_web,
    toggle_key,
)
from worker.store.database import Store
from worker.store.relays import Relays

pytestmark = pytest.mark.integration  # starts processes

# Long enough for the kill to land while Atreemo holds the request, which it then applies
# (the simulator finishes a request whose caller has gone, as a real server may); longer
# where another card's delivery is awaited before the kill.
HELD_SECONDS = 4
HELD_LONGER_SECONDS = 8


def recorded(web: WebProcess, *bodies: bytes) -> None:
    for body in bodies:
        assert accepted(web, body)["duplicate"] is False


def held_send_killed(relay_sims: RelaySims, store: Store, head: bytes) -> None:
    """After the kill: Atreemo applies the held request; the row stays uncertain, leased."""
    wait_for(lambda: relay_sims.atreemo_ids().count(event_id(head)) == 1, 30,
             "Atreemo finishing the request the dead worker sent")
    orphan = delivery(store, toggle_key(head))
    assert (orphan.state, orphan.uncertain, orphan.attempts) == ("received", True, 1)
    assert orphan.lease_until is not None


def test_a_pool_child_killed_mid_delivery_its_event_is_resent_once_counted_ambiguous(
    relay_sims: RelaySims, web: WebProcess, start_worker: Callable[..., CeleryProcess],
    store: Store, client: Celery,
) -> None:
    worker = start_worker(concurrency=1)
    relay_sims.fault("atreemo", kind="latency", seconds=HELD_SECONDS)
    first, second, third = (card_event("card.balance_adjusted", 7201, s) for s in (1, 2, 3))
    recorded(web, first)
    wait_for(lambda: relay_sims.stats("atreemo")["requests"] >= 1, 30,
             "the first event's request held by Atreemo")
    recorded(web, second, third)  # they wait behind the held one
    os.kill(only_pool_child(worker), signal.SIGKILL)  # one child, as the OOM killer would
    held_send_killed(relay_sims, store, first)

    expire_leases(Relays(store))
    client.send_task("pointsync.sweep_relays")
    wait_for(all_final(store, [toggle_key(b) for b in (first, second, third)]), 60,
             "the card's events delivered after the kill")
    # The killed send and its resend, then the rest once each, in the card's order.
    assert relay_sims.atreemo_ids() == [event_id(b) for b in (first, first, second, third)]
    resent = delivery(store, toggle_key(first))
    assert (resent.state, resent.attempts, resent.ambiguous) == ("delivered", 2, 1)
    later = [delivery(store, toggle_key(b)) for b in (second, third)]
    assert [(r.state, r.attempts, r.ambiguous) for r in later] == [("delivered", 1, 0)] * 2


def test_a_worker_killed_mid_delivery_a_new_worker_and_beats_sweep_finish_in_order(
    relay_sims: RelaySims, web: WebProcess, start_worker: Callable[..., CeleryProcess],
    store: Store,
) -> None:
    worker = start_worker(concurrency=2)
    relay_sims.fault("atreemo", kind="latency", seconds=HELD_LONGER_SECONDS)
    slow = [card_event("card.balance_adjusted", 7301, s) for s in (1, 2, 3)]
    other = [card_event("card.balance_adjusted", 7302, s) for s in (1, 2)]
    recorded(web, slow[0])
    wait_for(lambda: relay_sims.stats("atreemo")["requests"] >= 1, 30,
             "the slow card's first request held by Atreemo")
    recorded(web, *slow[1:], *other)
    # A held subject holds up no other: the second process delivers the other card.
    wait_for(lambda: about_card(relay_sims.atreemo(), 7302) == [event_id(b) for b in other], 30,
             "the other card delivered while the first is held")
    worker.kill()  # the whole worker: its message stays unacknowledged for an hour
    start_worker(concurrency=2)
    start_worker("beat", POINTS_SWEEP_INTERVAL_SECONDS="5")  # its sweep finds the subject
    held_send_killed(relay_sims, store, slow[0])  # still leased: nobody may take it yet

    expire_leases(Relays(store))
    wait_for(all_final(store, [toggle_key(b) for b in slow]), 60,
             "the held card's events delivered by the new worker")
    assert about_card(relay_sims.atreemo(), 7301) == [event_id(b) for b in (slow[0], *slow)]
    assert about_card(relay_sims.atreemo(), 7302) == [event_id(b) for b in other]
    assert len(relay_sims.atreemo()) == 6
    resent = delivery(store, toggle_key(slow[0]))
    assert (resent.state, resent.attempts, resent.ambiguous) == ("delivered", 2, 1)
    assert [delivery(store, toggle_key(b)).ambiguous for b in (*slow[1:], *other)] == [0, 0, 0, 0]


def test_events_received_while_redis_is_down_are_delivered_in_order_by_the_sweep(
    relay_sims: RelaySims, worker_env: dict[str, str], store: Store,
    start_worker: Callable[..., CeleryProcess], own_redis: RedisServer, tmp_path: Path,
) -> None:
    env = {**worker_env, "REDIS_URL": own_redis.url}
    web = start_relay_web(env, tmp_path / "web.log")
    try:
        own_redis.stop()
        cards = [card_event("card.balance_adjusted", 7401, s) for s in (1, 2, 3)]
        rewards = [nector_event("walletreward_create", user_customer_id="cust-99",
                                created_at=f"2026-11-21T16:03:0{s}Z", wallet_coin_amount=10 * s)
                   for s in (1, 2)]
        # Out of order, each answered 200 within Toggle's own 10 s (post_toggle's timeout).
        recorded(web, cards[2], cards[0], cards[1])
        for n, body in ((2, rewards[1]), (1, rewards[0])):
            answer = post_nector(web, body, f"d-outage-{n}")
            assert answer.status_code == 200, answer.text
        relays = Relays(store)
        keys = [*map(toggle_key, cards), "nector:d-outage-1:contlo", "nector:d-outage-2:contlo"]
        assert [delivery(store, k).state for k in keys] == ["received"] * 5
        wait_for(lambda: web.log.read_text().count("the sweep delivers it") == 5, 60,
                 "the web process giving up queueing each event")

        own_redis.start()
        start_worker(REDIS_URL=own_redis.url)
        # An event received now is queued by the web process itself: no sweep has run, and
        # none would take a fresh row.
        after = card_event("card.balance_adjusted", 7402, 1)
        recorded(web, after)
        wait_for(lambda: delivery(store, toggle_key(after)).final, 60, "the web queueing again")
        assert relay_sims.atreemo_ids() == [event_id(after)]

        age(relays, 61)  # untouched past the sweep's 60 s: their tasks were lost
        sender = Celery("it-outage", broker=own_redis.url)
        try:
            sender.send_task("pointsync.sweep_relays")
        finally:
            sender.close()
        wait_for(all_final(store, keys), 60, "the events recorded in the outage delivered")
        assert relay_sims.atreemo_ids() == [event_id(b) for b in (after, *cards)]
        assert [e["properties"]["wallet_coin_amount"] for e in relay_sims.contlo()] == [10, 20]
        assert {delivery(store, k).state for k in keys} == {"delivered"}
    finally:
        web.stop(timeout=5)
