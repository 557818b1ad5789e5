"""A call made without a reference acts once, even when the pool child running it dies and
Celery hands the same message to another child (task_reject_on_worker_lost)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import psutil
import pytest
from celery import Celery

from tests.support.integration import Sim, wait_for
from worker.harness import CeleryProcess
from worker.ledger import Ledger, point_transactions
from worker.sim.guids import seeded_ids
from worker.store import Store

pytestmark = pytest.mark.integration  # starts processes

CONTACT = seeded_ids(0, 1)[0]


def bookings(sim: Sim, contact: str) -> int:
    response = sim.http.get(f"{sim.urls.treazure}/_sim/treazure/account/{contact}")
    return int(response.json()["history_length"]) - 1


def only_pool_child(worker: CeleryProcess) -> int:
    """The pid of a one-process worker's pool child."""
    children = psutil.Process(worker.proc.pid).children()
    assert len(children) == 1, children
    return children[0].pid


def test_a_call_without_reference_books_once_when_its_pool_child_dies(
    sim: Sim, start_worker: Callable[..., CeleryProcess], client: Celery, store: Store
) -> None:
    sim.post("seed", {"contacts": 1})
    # The booking is applied but its answer lost; the child then waits (settle pause) before
    # it reads the history: that is where it is killed, as the OOM killer would.
    worker = start_worker(concurrency=1, POINTS_SETTLE_SECONDS="60", POINTS_LEASE_SECONDS="10",
                          HTTP_TIMEOUT_SECONDS="2")
    sim.post("faults", {"target": "treazure.transaction", "kind": "drop_after_apply"})
    call = client.send_task("pointsync.add_points", kwargs={
        "contact_id": CONTACT, "amount": "7", "description": "no reference given"})
    wait_for(lambda: bookings(sim, CONTACT) == 1, 30, "the booking to reach Treazure")
    child = only_pool_child(worker)
    os.kill(child, signal.SIGKILL)  # one child, not the worker's process group

    # Celery requeues the message; the same call runs again in another child and must find
    # the transaction the first delivery recorded, not book a new one.
    outcome = call.get(timeout=90)
    reference = f"pts-{call.id}"
    assert outcome["reference"] == reference
    with store.engine.connect() as conn:
        references = conn.execute(
            point_transactions.select().with_only_columns(point_transactions.c.reference)
        ).scalars().all()
    assert references == [reference]
    assert bookings(sim, CONTACT) == 1

    # The row is finished by beat's sweep (here with a worker whose settle pause is short):
    # its history holds the receiptNr, so it is booked without a second send.
    worker.stop(timeout=5)
    quick = {"POINTS_SETTLE_SECONDS": "0.3", "POINTS_LEASE_SECONDS": "10",
             "POINTS_STALE_SECONDS": "5", "HTTP_TIMEOUT_SECONDS": "2",
             "POINTS_SWEEP_INTERVAL_SECONDS": "5"}
    start_worker(**quick)
    start_worker("beat", **quick)
    ledger = Ledger(store)

    def finished() -> bool:
        row = ledger.get(reference)
        return row is not None and row.state in ("booked", "applied")

    wait_for(finished, 60, "the sweep to finish the transaction")
    row = ledger.get(reference)
    assert row is not None and row.attempts == 1
    assert bookings(sim, CONTACT) == 1
