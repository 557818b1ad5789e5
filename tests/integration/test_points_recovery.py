"""Recovery in a lease, not in minutes: a killed worker's transactions are taken over once
its short lease runs out unrenewed; webhooks recorded while Redis is down are queued as soon
as it is back; beat rides out a Redis outage. Real processes, the simulators, a Redis of
the test's own where the test stops it."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import redis
from celery import Celery

from sims.guids import seeded_ids
from sims.harness import CeleryProcess, free_port, start_web
from tests.support.integration import Sim, bookings, wait_for
from tests.support.redis_server import RedisServer
from tests.support.web import event, signed
from worker.store.database import Store
from worker.store.ledger import Ledger

pytestmark = pytest.mark.integration  # starts processes

CONTACTS = seeded_ids(0, 12)
# A lease far shorter than one HTTP timeout: only renewals keep a slow booking, and a dead
# worker's row is free again a few seconds after its last renewal. No row ever goes stale
# (an hour): only an expired lease, or the web process, can hand a row on.
SHORT_LEASE = {"POINTS_LEASE_SECONDS": "5", "HTTP_TIMEOUT_SECONDS": "10",
               "POINTS_SETTLE_SECONDS": "0.3", "POINTS_STALE_SECONDS": "3600",
               "POINTS_SWEEP_INTERVAL_SECONDS": "5"}


def states(store: Store, references: list[str]) -> list[str | None]:
    ledger = Ledger(store)
    return [getattr(ledger.get(ref), "state", None) for ref in references]


@pytest.fixture
def seeded(sim: Sim) -> Sim:
    sim.post("seed", {"contacts": len(CONTACTS)})
    return sim


def test_a_killed_workers_transactions_are_taken_over_once_its_short_lease_runs_out(
    seeded: Sim, start_worker: Callable[..., CeleryProcess], client: Celery, store: Store
) -> None:
    contacts = CONTACTS[:6]
    refs = [f"ref-dead-{i}" for i in range(len(contacts))]
    worker = start_worker(**SHORT_LEASE)
    # Each booking hangs in Treazure for most of a lease (the sim applies it even when the
    # caller is gone): the kill lands while requests are out.
    seeded.post("faults", {"target": "treazure.transaction", "kind": "latency",
                           "seconds": 3.0, "count": len(contacts)})
    for contact, ref in zip(contacts, refs, strict=True):
        client.send_task("pointsync.add_points", kwargs={
            "contact_id": contact, "amount": 5, "description": "killed", "reference": ref})
    wait_for(lambda: seeded.stats()["arrived"].get("treazure.transaction", 0) >= 2, 30,
             "bookings in flight")
    worker.kill()  # the whole worker: its messages stay unacknowledged for hours
    held = [r for r in (Ledger(store).get(ref) for ref in refs) if r and r.lease_until]
    assert held, "the killed worker held rows"
    for row in held:  # one short lease from its last renewal, not a booking's worth
        assert row.lease_until - row.updated_at <= timedelta(seconds=5)  # type: ignore[operator]

    start_worker(**SHORT_LEASE)
    start_worker("beat", **SHORT_LEASE)  # its sweep is what finds the rows
    wait_for(lambda: states(store, refs) == ["applied"] * len(refs), 60,
             "every transaction applied after the kill")
    # Taken over by a second holder, each uncertain row resolved through the history
    # first: nothing booked twice.
    for contact in contacts:
        assert bookings(seeded, contact) == 1, contact


def test_webhooks_recorded_while_redis_is_down_are_queued_as_soon_as_it_returns(
    seeded: Sim, start_worker: Callable[..., CeleryProcess], worker_env: dict[str, str],
    store: Store, own_redis: RedisServer, tmp_path: Path,
) -> None:
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    env = {**worker_env, **SHORT_LEASE, "REDIS_URL": own_redis.url}
    web = start_web({**env, "PORT": str(free_port()), "WEBHOOK_SECRET": secret,
                     "WEB_API_KEY": "it-key"}, tmp_path / "web.log")
    try:
        own_redis.stop()
        refs = [f"evt_outage_{i}" for i in range(3)]
        for i, ref in enumerate(refs):
            body = event(ref, amount=4, contact=CONTACTS[6 + i])
            answer = httpx.post(f"{web.url}/webhooks/engage", content=body,
                                headers=signed(body, msg_id=f"msg_{i}", secret=secret),
                                timeout=60)
            assert answer.status_code == 202, answer.text  # recorded: Svix will not resend
        assert states(store, refs) == ["received"] * len(refs)

        own_redis.start()
        # No beat runs, so no sweep: only the web process can have queued them (one
        # booking round takes every recorded row).
        queued = redis.Redis.from_url(own_redis.url)
        wait_for(lambda: queued.llen("celery") >= 1, 30,
                 "a booking round queued once Redis is back")
        start_worker(**{**SHORT_LEASE, "REDIS_URL": own_redis.url})
        wait_for(lambda: states(store, refs) == ["applied"] * len(refs), 60,
                 "the rows recorded during the outage applied")
        for i in range(len(refs)):
            assert bookings(seeded, CONTACTS[6 + i]) == 1
    finally:
        web.stop()


def test_beat_keeps_scheduling_after_a_redis_outage(
    start_worker: Callable[..., CeleryProcess], own_redis: RedisServer
) -> None:
    beat = start_worker("beat", **{**SHORT_LEASE, "REDIS_URL": own_redis.url})
    queue = redis.Redis.from_url(own_redis.url)
    wait_for(lambda: queue.llen("celery") >= 1, 30, "beat's first sweep queued")
    own_redis.stop()
    wait_for(lambda: beat.proc.poll() is not None
             or "Redis unavailable" in beat.log.read_text(), 30, "beat meeting the outage")
    own_redis.start()
    before = queue.llen("celery")
    wait_for(lambda: beat.proc.poll() is not None or queue.llen("celery") > before, 30,
             "a sweep queued after Redis returned")
    assert beat.proc.poll() is None, beat.log.read_text()[-3000:]
