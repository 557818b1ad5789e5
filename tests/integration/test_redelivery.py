"""A call made without a reference acts once, even when the pool child running it dies and
Celery hands the same message to another child (task_reject_on_worker_lost)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest
from celery import Celery

from sims.guids import seeded_ids
from sims.harness import CeleryProcess
from tests.support.integration import Sim, bookings, only_pool_child, wait_for
from worker.store.database import Store
from worker.store.ledger import Ledger, point_transactions

pytestmark = pytest.mark.integration  # starts processes

CONTACT = seeded_ids(0, 1)[0]


def test_a_call_without_reference_books_once_when_its_pool_child_dies(
    sim: Sim, start_worker: Callable[..., CeleryProcess], client: Celery, store: Store
) -> None:
    sim.post("seed", {"contacts": 1})
    # The booking request hangs in Treazure: the child is killed while it waits for the
    # answer, as the OOM killer would.
    worker = start_worker(concurrency=1, POINTS_LEASE_SECONDS="10", HTTP_TIMEOUT_SECONDS="30")
    sim.post("faults", {"target": "treazure.transaction", "kind": "latency", "seconds": 5})
    call = client.send_task("pointsync.add_points", kwargs={
        "contact_id": CONTACT, "amount": "7", "description": "no reference given"})
    wait_for(lambda: sim.stats()["arrived"].get("treazure.transaction", 0) >= 1, 30,
             "the booking request to reach Treazure")
    os.kill(only_pool_child(worker), signal.SIGKILL)  # one child, not the process group

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

    # The row is finished by beat's sweep once the dead child's lease ran out: Treazure's
    # history for its receiptNr decides whether the hanging request was booked, so the
    # account ends with exactly one booking either way.
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
    assert bookings(sim, CONTACT) == 1
