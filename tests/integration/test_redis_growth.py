"""Redis carries the broker, the locks and the limiter, with noeviction: nothing in it may grow
with the traffic. Point transactions, drains, sweeps and history chunks keep no result; the
results that are kept expire within hours; no key is left without a TTL per transaction."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from celery import Celery

from sims.guids import seeded_ids
from sims.harness import CeleryProcess, WebProcess, free_port, start_web
from tests.support.integration import Sim, wait_for
from tests.support.web import SECRET, signed
from worker.faces.celery.app import RESULT_EXPIRES_SECONDS
from worker.store.database import Store
from worker.store.ledger import Ledger

pytestmark = pytest.mark.integration  # starts processes

CONTACTS = seeded_ids(0, 20)
FAST = {"POINTS_SETTLE_SECONDS": "0.3", "HTTP_TIMEOUT_SECONDS": "2"}


@pytest.fixture
def web(worker_env: dict[str, str], tmp_path: Path) -> Iterator[WebProcess]:
    env = {**worker_env, "PORT": str(free_port()), "WEBHOOK_SECRET": SECRET,
           "WEB_API_KEY": "it-key"}
    process = start_web(env, tmp_path / "web.log")
    yield process
    process.stop()


def deliver(web: WebProcess, contact: str, event_id: str) -> None:
    body = json.dumps({
        "eventType": "loyalty.addPoints", "id": event_id, "isEncrypted": False,
        "tenant": "it", "payload": {"amount": 3, "contactId": contact, "pointDefinitionId": 1,
                                    "source": "Manual", "description": "growth"}}).encode()
    answer = httpx.post(f"{web.url}/webhooks/engage", content=body,
                        headers=signed(body, msg_id=f"msg_{event_id}"))
    assert answer.status_code == 202, answer.text


def traffic(web: WebProcess, client: Celery, store: Store, count: int) -> str:
    """`count` webhook transactions, a sweep, a history chunk and a sync; returns the
    sync's task id (its result is one that is kept)."""
    events = [f"evt_{uuid.uuid4().hex}" for _ in range(count)]
    for n, event_id in enumerate(events):
        deliver(web, CONTACTS[n % len(CONTACTS)], event_id)
    ledger = Ledger(store)
    wait_for(lambda: all((row := ledger.get(e)) is not None and row.state == "applied"
                         for e in events), 90, f"{count} transactions applied")
    client.send_task("pointsync.sweep_points")
    client.send_task("pointsync.fetch_history_batch", kwargs={"contact_ids": CONTACTS[:3]})
    sync = client.send_task("pointsync.sync_balances")
    assert sync.get(timeout=60)["status"] == "succeeded"
    return str(sync.id)


def keys(r: redis.Redis) -> dict[str, int]:
    """Every key of the test database with its TTL in seconds (-1: none)."""
    return {key.decode(): int(r.ttl(key)) for key in r.scan_iter(count=1000)}


def idle(r: redis.Redis) -> bool:
    """No message waiting in a queue or taken and not yet acknowledged."""
    queued = [k for k in r.scan_iter(count=1000) if r.type(k) == b"list"]
    return not queued and not r.hlen("unacked")


def lasting(found: dict[str, int]) -> dict[str, int]:
    """Keys that outlive a burst: no TTL, or more than five minutes of it (a drain's turn, a
    lock or a rate-limit window come and go with the traffic and expire on their own)."""
    return {k: ttl for k, ttl in found.items() if ttl == -1 or ttl > 300}


def test_traffic_leaves_no_key_behind_and_kept_results_expire_within_hours(
    sim: Sim, start_worker: Callable[..., CeleryProcess], client: Celery, store: Store,
    web: WebProcess, redis_url: str,
) -> None:
    sim.post("seed", {"contacts": len(CONTACTS)})
    start_worker(**FAST)
    r = redis.Redis.from_url(redis_url)
    first_sync = traffic(web, client, store, 10)
    wait_for(lambda: idle(r), 30, "every message taken and acknowledged")
    before = lasting(keys(r))
    second_sync = traffic(web, client, store, 40)
    wait_for(lambda: idle(r), 30, "every message taken and acknowledged")
    after = lasting(keys(r))

    results = {k for k in after if k.startswith("celery-task-meta-")}
    # Only the two syncs' summaries were kept: no booking, drain, sweep or chunk result.
    assert results == {f"celery-task-meta-{first_sync}", f"celery-task-meta-{second_sync}"}
    assert all(0 < after[k] <= RESULT_EXPIRES_SECONDS for k in results)
    # Four times the traffic added no key at all, but the second sync's result.
    new = set(after) - set(before) - {f"celery-task-meta-{second_sync}"}
    assert new == set(), sorted(new)
    # And nothing that lives for ever was added either.
    assert {k for k, ttl in after.items() if ttl == -1} <= set(before)
