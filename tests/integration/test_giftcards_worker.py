"""Gift cards through a real Celery worker against the Toggle, Treazure and Engage simulators
over HTTP: one Toggle order per reference whatever fails, points turned into a card exactly
once across both systems even when the pool child dies between the two, and no PIN in the
task results, the database or the worker's log."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest
from celery import Celery
from sqlalchemy import text

from sims.guids import seeded_ids
from sims.harness import CeleryProcess
from tests.support.integration import Sim, bookings, only_pool_child, wait_for
from tests.support.leases import expire_leases
from tests.support.toggle_control import Toggle
from worker.store.database import Store
from worker.store.giftcards import giftcard_orders, giftcard_redemptions

pytestmark = pytest.mark.integration  # starts processes

CONTACT = seeded_ids(0, 1)[0]
QUICK = {"POINTS_SETTLE_SECONDS": "0.3", "POINTS_LEASE_SECONDS": "10",
         "POINTS_STALE_SECONDS": "5", "HTTP_TIMEOUT_SECONDS": "30",
         "POINTS_SWEEP_INTERVAL_SECONDS": "5"}


def test_a_card_is_issued_once_per_reference_with_no_pin_anywhere(
    sim: Sim, toggle: Toggle, start_worker: Callable[..., CeleryProcess], client: Celery,
    store: Store,
) -> None:
    worker = start_worker(**QUICK)
    # In venue (no email): the card comes back in Toggle's answer, PIN included.
    first = client.send_task("pointsync.issue_gift_card", kwargs={
        "value": "25.00", "reference": "it-card-1", "message": "Thank you"}).get(timeout=60)
    again = client.send_task("pointsync.issue_gift_card", kwargs={
        "value": "25.00", "reference": "it-card-1", "message": "Thank you"}).get(timeout=60)
    (order,) = toggle.orders("it-card-1")
    number = order["LineItems"][0]["Card"]["card_reference"]
    pin = toggle.card(number)["pin"]
    assert first["state"] == again["state"] == "issued"
    assert number not in str(first) and number[-4:] in str(first)  # masked, not hidden
    # The PIN and the full number are nowhere the operator's tools show.
    for shown in (str(first), str(again), worker.log.read_text()):
        assert pin not in shown
        assert number not in shown
    with store.engine.connect() as conn:
        dump = str(conn.execute(text("SELECT * FROM giftcard_orders")).all())
    assert pin not in dump


def test_points_become_one_card_when_the_pool_child_dies_between_the_two(
    sim: Sim, toggle: Toggle, start_worker: Callable[..., CeleryProcess], client: Celery,
    store: Store,
) -> None:
    sim.post("seed", {"contacts": 1})
    worker = start_worker(concurrency=1, **QUICK)
    # The card order hangs in Toggle (applied after the pause): the child is killed once the
    # points are taken and the order is on its way.
    toggle.post("faults", {"target": "createOrder", "kind": "latency", "seconds": 5})
    call = client.send_task("pointsync.redeem_points_for_gift_card", kwargs={
        "contact_id": CONTACT, "points": "100", "value": "10.00",
        "email": "guest@example.com", "reference": "it-redeem-1"})
    wait_for(lambda: toggle.requests("createOrder") >= 1, 60, "the card order to be sent")
    assert bookings(sim, CONTACT) == 1
    os.kill(only_pool_child(worker), signal.SIGKILL)  # one child, not the process group
    # Toggle applies the order the dead child sent; the child's leases (60 s, no setting)
    # would then run out, with nothing else happening meanwhile: they are run out here.
    wait_for(lambda: len(toggle.orders("it-redeem-1")) == 1, 30,
             "Toggle applying the order the dead child sent")
    expire_leases(store.engine, giftcard_orders, giftcard_redemptions)

    # The message comes back to another child; with beat's sweep as the last resort the
    # redemption finishes from its recorded step: no second redemption, no second card.
    start_worker("beat", **QUICK)
    outcome = call.get(timeout=90)
    assert outcome["reference"] == "it-redeem-1"

    def done() -> bool:
        state = client.send_task("pointsync.redeem_points_for_gift_card", kwargs={
            "contact_id": CONTACT, "points": "100", "value": "10.00",
            "email": "guest@example.com", "reference": "it-redeem-1"}).get(timeout=60)
        return state["state"] == "done"

    wait_for(done, 90, "the redemption to finish")
    assert bookings(sim, CONTACT) == 1
    assert len(toggle.orders("it-redeem-1")) == 1
