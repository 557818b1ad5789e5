"""Points history through real Celery workers on real Redis, against the simulators: the
refresh after a sync fans out in chunk tasks, single fetches are idempotent, a booking's
history arrives, faults on the History call are ridden out, and history chunks never hold
up a sync (they go in at the lowest Redis priority)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from celery.result import AsyncResult
from sqlalchemy import func, select

from sims.guids import seeded_ids
from sims.harness import CeleryProcess, start_celery
from tests.support.integration import QUIET_WORKER, Sim, logged_results, wait_for
from worker.base.settings import CoreSettings
from worker.faces.celery.app import celery_config
from worker.store.database import Store
from worker.store.history import HistoryStore, history_contacts, points_history

pytestmark = pytest.mark.integration  # starts processes

SYNC = "pointsync.sync_balances"
FETCH = "pointsync.fetch_history"
BATCH = "pointsync.fetch_history_batch"
PURGE = "pointsync.purge_history"
REFRESH = "pointsync.refresh_history"
ADD = "pointsync.add_points"
HISTORY_PRIORITY = 9  # tasks.HISTORY_PRIORITY: the lowest
FAST = {"POINTS_SETTLE_SECONDS": "0.3", "HTTP_TIMEOUT_SECONDS": "2"}


@pytest.fixture
def client(redis_url: str) -> Iterator[Celery]:
    """A client with the worker's broker options: a priority sent by a client with kombu's
    defaults lands in a Redis key (other separator, other steps) the worker never reads."""
    app = Celery("it-history", broker=redis_url, backend=redis_url)
    app.conf.broker_connection_retry_on_startup = True
    config = celery_config(CoreSettings(REDIS_URL=redis_url))
    for name in ("broker_transport_options", "task_queues", "task_routes", "task_default_queue"):
        app.conf[name] = config[name]  # history tasks go to their own queue, as the CLI's do
    yield app
    app.close()


def contacts_with_history(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(history_contacts)).scalar_one())


def stored_entries(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(points_history)).scalar_one())


def entries_of(store: Store, contact: str) -> list[dict[str, Any]]:
    return HistoryStore(store).page(contact, 0, 1000)[0]


def batch_results(worker: CeleryProcess) -> list[dict[str, int]]:
    """Chunk tasks keep no result in Redis (nobody reads them): their worker logs it."""
    return [r.result for r in logged_results(worker.log, BATCH)]


def history_requests(sim: Sim) -> int:
    return int(sim.stats()["arrived"].get("treazure.history", 0))


def test_a_sync_fans_the_history_refresh_out_in_chunk_tasks(
    sim: Sim, start_worker: Callable[..., CeleryProcess], client: Celery, store: Store,
    redis_url: str,
) -> None:
    sim.post("seed", {"contacts": 1200})
    worker = start_worker(HISTORY_CHUNK_SIZE="500", HISTORY_CHUNK_SECONDS="60")
    summary = client.send_task(SYNC).get(timeout=120)
    assert summary["status"] == "succeeded" and summary["unique_contacts"] == 1200
    wait_for(lambda: contacts_with_history(store) == 1200, 120,
             "every contact the sync read with its history stored")
    wait_for(lambda: len(batch_results(worker)) >= 3, 60, "the chunk tasks' results")
    assert [r.result for r in logged_results(worker.log, REFRESH)] == [
        {"run_id": summary["run_id"], "contacts": 1200, "chunks": 3}]
    batches = batch_results(worker)
    assert sorted(b["contacts"] for b in batches) == [200, 500, 500]
    assert sum(b["added"] for b in batches) == 1200
    assert sum(b["unknown"] + b["failed"] for b in batches) == 0
    # Seeded accounts hold one entry each (the opening balance), read once.
    assert stored_entries(store) == 1200
    assert history_requests(sim) == 1200
    for contact in seeded_ids(0, 1200)[::97]:
        (opening,) = entries_of(store, contact)
        assert opening["comment"] == "opening balance"


def test_no_refresh_when_history_after_sync_is_off(
    sim: Sim, start_worker: Callable[..., CeleryProcess], client: Celery, store: Store,
    redis_url: str,
) -> None:
    sim.post("seed", {"contacts": 50})
    worker = start_worker(HISTORY_AFTER_SYNC="false")
    sync = client.send_task(SYNC)
    assert sync.get(timeout=60)["status"] == "succeeded"
    # A task sent after the sync at the same priority is taken after anything the sync
    # enqueued: once this one is done, a refresh would have been received and logged.
    purge = client.send_task(PURGE, priority=HISTORY_PRIORITY)
    purge.get(timeout=60)
    assert f"Task {REFRESH}[" not in worker.log.read_text()
    # Only the results somebody reads are kept in Redis.
    keys = redis.Redis.from_url(redis_url).keys("celery-task-meta-*")
    assert sorted(k.decode().removeprefix("celery-task-meta-") for k in keys) == \
        sorted([sync.id, purge.id])
    assert contacts_with_history(store) == 0 and history_requests(sim) == 0


def test_fetch_history_task_stores_once_and_a_second_call_adds_nothing(
    sim: Sim, start_worker: Callable[..., CeleryProcess], client: Celery, store: Store
) -> None:
    sim.post("seed", {"contacts": 10})
    contact = seeded_ids(0, 10)[3]
    start_worker()
    first = client.send_task(FETCH, kwargs={"contact_id": contact}).get(timeout=60)
    assert first == {"contact_id": contact, "received": 1, "added": 1, "incremental": False,
                     "found": True}
    second = client.send_task(FETCH, kwargs={"contact_id": contact}).get(timeout=60)
    assert second == {"contact_id": contact, "received": 1, "added": 0, "incremental": True,
                      "found": True}
    assert len(entries_of(store, contact)) == 1
    unknown = "00000000-0000-4000-8000-0000000000ff"
    assert client.send_task(FETCH, kwargs={"contact_id": unknown}).get(timeout=60) == \
        {"contact_id": unknown, "found": False}
    with pytest.raises(Exception, match="contact_id"):
        client.send_task(FETCH, kwargs={"contact_id": "not-a-guid"}).get(timeout=60)
    assert history_requests(sim) == 3


def test_a_booking_brings_its_receipt_into_the_stored_history(
    sim: Sim, start_worker: Callable[..., CeleryProcess], client: Celery, store: Store
) -> None:
    sim.post("seed", {"contacts": 10})
    contact = seeded_ids(0, 10)[5]
    start_worker(**FAST)
    result = client.send_task(ADD, kwargs={"contact_id": contact, "amount": "12.50",
                                           "description": "history test",
                                           "reference": "ref-history"}).get(timeout=60)
    assert result["state"] in ("booked", "applied")

    def receipt_stored() -> bool:
        return any(e.get("receiptNr") == "ref-history" for e in entries_of(store, contact))

    wait_for(receipt_stored, 60, "the booking's entry in the stored history")
    newest, opening = entries_of(store, contact)
    assert (newest["amount"], newest["comment"]) == (12.5, "history test")
    assert newest["balance"] == opening["balance"] + 12.5
    # Fetching again finds nothing new: the booking's entry is stored once.
    again = client.send_task(FETCH, kwargs={"contact_id": contact}).get(timeout=60)
    assert again["added"] == 0 and len(entries_of(store, contact)) == 2


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "status", "status": 503, "count": 2},
        {"kind": "status", "status": 502, "body": "html"},
        {"kind": "status", "status": 429, "retry_after": "0"},
        {"kind": "drop"},
        {"kind": "latency", "seconds": 2.5},  # slower than HTTP_TIMEOUT_SECONDS
    ],
    ids=lambda f: "-".join(str(v) for v in f.values()),
)
def test_a_fault_on_the_history_call_is_retried_and_the_history_arrives(
    sim: Sim, start_worker: Callable[..., CeleryProcess], client: Celery, store: Store,
    fault: dict[str, Any],
) -> None:
    sim.post("seed", {"contacts": 10})
    contact = seeded_ids(0, 10)[7]
    start_worker(**FAST)
    sim.post("faults", {"target": "treazure.history", **fault})
    result = client.send_task(FETCH, kwargs={"contact_id": contact}).get(timeout=90)
    assert result["found"] is True and result["added"] == 1
    assert len(entries_of(store, contact)) == 1
    assert sim.stats()["faults_pending"] == 0  # the fault really was met
    assert history_requests(sim) == 1 + fault.get("count", 1)


def test_faults_during_a_refresh_still_store_every_history(
    sim: Sim, start_worker: Callable[..., CeleryProcess], client: Celery, store: Store,
    redis_url: str,
) -> None:
    sim.post("seed", {"contacts": 600})
    for fault in ({"kind": "status", "status": 503, "count": 5},
                  {"kind": "status", "status": 429, "retry_after": "0", "count": 3},
                  {"kind": "drop", "count": 2}):
        sim.post("faults", {"target": "treazure.history", **fault})
    worker = start_worker(**FAST, HISTORY_CHUNK_SIZE="200", HISTORY_CHUNK_SECONDS="60")
    assert client.send_task(SYNC).get(timeout=120)["status"] == "succeeded"
    wait_for(lambda: contacts_with_history(store) == 600, 120, "every history stored")
    wait_for(lambda: len(batch_results(worker)) >= 3, 60, "the chunk tasks' results")
    assert sum(b["failed"] for b in batch_results(worker)) == 0
    assert stored_entries(store) == 600
    assert sim.stats()["faults_pending"] == 0
    assert history_requests(sim) == 600 + 10


def test_a_sync_is_not_queued_behind_history_chunks(
    sim: Sim, start_worker: Callable[..., CeleryProcess], client: Celery, store: Store
) -> None:
    sim.post("seed", {"contacts": 400})
    ids = seeded_ids(0, 400)
    # Each chunk: ten contacts one at a time, each History answer slowed down a little.
    sim.post("config", {"latency": {"treazure.history": 0.05}})
    worker = start_worker(HISTORY_FETCH_CONCURRENCY="1", HISTORY_AFTER_SYNC="false",
                          HISTORY_CHUNK_SECONDS="60")
    chunks = [client.send_task(BATCH, kwargs={"contact_ids": ids[k:k + 10]},
                               priority=HISTORY_PRIORITY) for k in range(0, 400, 10)]
    # Both worker processes busy with chunks, 38 more waiting: now the sync is sent.
    wait_for(lambda: history_requests(sim) >= 2, 60, "chunks running")
    sync = client.send_task(SYNC)
    summary = sync.get(timeout=120)
    assert summary["status"] == "succeeded" and summary["unique_contacts"] == 400
    wait_for(lambda: len(logged_results(worker.log, BATCH)) == len(chunks), 300,
             "every chunk done")
    logged = logged_results(worker.log, BATCH)
    assert {r.task_id for r in logged} == {chunk.id for chunk in chunks}
    assert sum(r.result["added"] for r in logged) == 400
    sync_done = done_at(sync)
    chunk_done = sorted(r.done_at for r in logged)
    assert sync_done < chunk_done[-1]
    # First in, first out would have served the sync after all 40 chunks had started, so
    # at most the last two could have finished after it. Served by priority, it ran as
    # soon as a process was free: most chunks were still waiting.
    after = sum(done > sync_done for done in chunk_done)
    assert after > len(chunks) // 2, (after, len(chunks))
    run = store.get_run(summary["run_id"])
    assert run["status"] == "succeeded"


def test_a_chunk_works_for_a_while_then_queues_the_rest(
    sim: Sim, start_worker: Callable[..., CeleryProcess], client: Celery, store: Store,
    redis_url: str,
) -> None:
    sim.post("seed", {"contacts": 100})
    ids = seeded_ids(0, 100)
    # One wave (2 × 4 contacts) per task, then the rest goes back in the queue.
    worker = start_worker(HISTORY_FETCH_CONCURRENCY="2", HISTORY_CHUNK_SECONDS="0.001",
                          HISTORY_AFTER_SYNC="false")
    first = client.send_task(BATCH, kwargs={"contact_ids": ids}, priority=HISTORY_PRIORITY)
    wait_for(lambda: any(r.task_id == first.id for r in logged_results(worker.log, BATCH)),
             60, "the first chunk done")
    (outcome,) = [r.result for r in logged_results(worker.log, BATCH) if r.task_id == first.id]
    assert outcome == {"contacts": 8, "added": 8, "unknown": 0, "failed": 0, "requeued": 92}
    wait_for(lambda: contacts_with_history(store) == 100, 120, "every history stored")
    wait_for(lambda: len(batch_results(worker)) == 13, 60, "every chunk's result")
    results = batch_results(worker)
    assert sum(r["contacts"] for r in results) == 100  # each contact fetched once
    assert sorted(r["requeued"] for r in results) == [0, *range(4, 93, 8)]
    assert history_requests(sim) == 100


def done_at(result: AsyncResult) -> datetime:
    done = result.date_done
    assert isinstance(done, datetime)
    return done if done.tzinfo else done.replace(tzinfo=UTC)


def test_purge_history_task_applies_the_retention(
    sim: Sim, start_worker: Callable[..., CeleryProcess], client: Celery, store: Store
) -> None:
    contact, other = seeded_ids(0, 2)

    def at(days: float) -> dict[str, Any]:
        moment = (datetime.now(UTC) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"dateTime": moment, "amount": days, "balance": days, "receiptNr": None}

    HistoryStore(store).save(contact, [at(40), at(31), at(29), at(1)])
    HistoryStore(store).save(other, [at(365)])
    start_worker(HISTORY_RETENTION_DAYS="30")
    assert client.send_task(PURGE).get(timeout=60) == {"removed": 3}
    assert [e["amount"] for e in entries_of(store, contact)] == [1, 29]
    assert entries_of(store, other) == []
    assert client.send_task(PURGE).get(timeout=60) == {"removed": 0}


def test_main_workers_never_run_history_and_history_workers_do(
    sim: Sim, client: Celery, store: Store, worker_env: dict[str, str], tmp_path: Path
) -> None:
    """The Procfile's split: `-Q celery` workers leave history to `-Q pointsync.history`."""
    sim.post("seed", {"contacts": 50})
    contact = seeded_ids(0, 1)[0]
    main = start_celery("worker", {**worker_env, "HISTORY_AFTER_SYNC": "false"},
                        tmp_path / "main.log", ["-Q", "celery", "-n", "main@%h", *QUIET_WORKER])
    started = [main]
    try:
        fetch = client.send_task(FETCH, kwargs={"contact_id": contact})  # routed: history
        sync = client.send_task(SYNC)
        assert sync.get(timeout=120)["status"] == "succeeded"  # sent after, done first
        assert fetch.state == "PENDING"  # no history worker yet: nobody took it
        assert HistoryStore(store).fetched(contact) is None
        started.append(start_celery("worker", worker_env, tmp_path / "history.log",
                                    ["-Q", "pointsync.history", "-n", "history@%h", *QUIET_WORKER]))
        assert fetch.get(timeout=60)["found"] is True
        assert HistoryStore(store).fetched(contact) is not None
    finally:
        for process in started:
            process.kill()  # as start_worker's: the next test has a Redis and store of its own
