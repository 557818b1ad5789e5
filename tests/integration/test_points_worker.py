"""Point transactions through real Celery workers on real Redis, against the simulators,
with faults injected: each reference is booked exactly once, and Engage ends equal to
Treazure."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery import Celery
from sqlalchemy import update
from svix.webhooks import Webhook

from sims.guids import seeded_ids
from sims.harness import BIN, CeleryProcess, WebProcess, free_port, start_web
from tests.support.integration import Sim, bookings, wait_for
from worker.base.point_request import validate_request
from worker.store.database import Store
from worker.store.ledger import Ledger, point_transactions

pytestmark = pytest.mark.integration  # starts processes

ADD = "pointsync.add_points"
SWEEP = "pointsync.sweep_points"
SYNC = "pointsync.sync_balances"
CONTACTS = seeded_ids(0, 50)
# Quick retries and a short lease, so the faults below resolve within seconds.
FAST = {"POINTS_SETTLE_SECONDS": "0.3", "POINTS_LEASE_SECONDS": "12",
        "POINTS_STALE_SECONDS": "5", "HTTP_TIMEOUT_SECONDS": "2"}


def engage_equals_treazure(sim: Sim, contact: str) -> bool:
    engage = sim.http.get(f"/_sim/engage/balance/{contact}").json()["balance"]
    treazure = sim.http.get(f"{sim.urls.treazure}/_sim/treazure/account/{contact}").json()
    return bool(engage == treazure["balance"])


def add(client: Celery, contact: str, amount: Any, reference: str | None = None,
        description: str = "integration test") -> Any:
    return client.send_task(ADD, kwargs={"contact_id": contact, "amount": amount,
                                         "description": description, "reference": reference})


def wait_applied(store: Store, *references: str, timeout: float = 60) -> None:
    """A task ends once its transaction is booked; the Engage push follows in a drain."""
    ledger = Ledger(store)

    def applied() -> bool:
        rows = [ledger.get(ref) for ref in references]
        return all(row is not None and row.state == "applied" for row in rows)

    wait_for(applied, timeout, f"{len(references)} transaction(s) applied in Engage")


def fault(sim: Sim, target: str, kind: str, **extra: Any) -> None:
    sim.post("faults", {"target": target, "kind": kind, **extra})


@pytest.fixture
def seeded(sim: Sim) -> Sim:
    sim.post("seed", {"contacts": len(CONTACTS)})
    return sim


def test_a_transaction_is_booked_once_and_engage_follows(
    seeded: Sim, start_worker: Callable[..., CeleryProcess], client: Celery, store: Store
) -> None:
    contact = CONTACTS[0]
    start_worker(**FAST)
    first = add(client, contact, "12.50", "ref-once").get(timeout=60)
    assert first["state"] in ("booked", "applied") and first["amount"] == "12.50"
    wait_applied(store, "ref-once")
    assert bookings(seeded, contact) == 1
    assert engage_equals_treazure(seeded, contact)
    again = add(client, contact, "12.50", "ref-once").get(timeout=60)
    assert again["duplicate"] is True and again["state"] == "applied"
    assert bookings(seeded, contact) == 1
    row = Ledger(store).get("ref-once")
    assert row is not None and row.attempts == 1 and row.source == "task"


@pytest.mark.parametrize(
    ("target", "kind", "extra"),
    [
        ("treazure.transaction", "drop_after_apply", {}),  # booked, answer lost
        ("treazure.transaction", "status", {"status": 503}),  # 5xx after sending
        ("treazure.transaction", "status", {"status": 502, "body": "html"}),
        ("treazure.transaction", "status", {"status": 429, "retry_after": "0"}),
        ("treazure.transaction", "drop", {}),  # dropped before applying
        ("treazure.transaction", "latency", {"seconds": 1.0}),  # slow but answered
        ("treazure.transaction", "latency", {"seconds": 2.5}),  # slower than our timeout
        ("treazure.history", "status", {"status": 503, "count": 2}),
        ("engage.balances", "status", {"status": 503, "count": 2}),
    ],
    ids=lambda value: str(value) if not isinstance(value, dict) else "-".join(
        f"{k}={v}" for k, v in value.items()),
)
def test_each_fault_still_books_exactly_once(
    seeded: Sim, start_worker: Callable[..., CeleryProcess], client: Celery, store: Store,
    target: str, kind: str, extra: dict[str, Any],
) -> None:
    contact = CONTACTS[1]
    start_worker(**{**FAST, "POINTS_SETTLE_SECONDS": "1.5"})
    fault(seeded, target, kind, **extra)
    result = add(client, contact, "-3", "ref-fault").get(timeout=90)
    # An ambiguous answer lets the row go for the settle pause: the task queued again books.
    assert result["state"] in ("booked", "applied") or result["retry_in"] is not None, result
    wait_applied(store, "ref-fault")
    assert bookings(seeded, contact) == 1
    assert engage_equals_treazure(seeded, contact)
    assert seeded.stats()["faults_pending"] == 0  # the fault really was met


def test_duplicates_and_concurrent_transactions_for_one_contact(
    seeded: Sim, start_worker: Callable[..., CeleryProcess], client: Celery, store: Store
) -> None:
    contact = CONTACTS[2]
    start_worker(**FAST)
    start_worker(**FAST)  # two workers, four processes, all on one contact
    references = [f"ref-c-{i}" for i in range(24)]
    # Every reference sent three times, interleaved: 72 messages, 24 transactions.
    results = [add(client, contact, 1, ref) for _ in range(3) for ref in references]
    outcomes = [r.get(timeout=120) for r in results]
    wait_applied(store, *references)
    assert bookings(seeded, contact) == 24
    assert engage_equals_treazure(seeded, contact)
    # Each reference was sent to Treazure once: no attempt was repeated, none doubled.
    ledger = Ledger(store)
    assert {ledger.get(ref).attempts for ref in references} == {1}  # type: ignore[union-attr]
    assert all(o["state"] in ("received", "booked", "applied") for o in outcomes)


def test_worker_killed_mid_batch_loses_and_doubles_nothing(
    seeded: Sim, start_worker: Callable[..., CeleryProcess], client: Celery, store: Store
) -> None:
    contacts = CONTACTS[10:20]
    worker = start_worker(**FAST)
    # Every booking hangs in Treazure for a while, then is applied (the sim applies it even
    # though the caller is gone): the kill lands while requests are out.
    fault(seeded, "treazure.transaction", "latency", seconds=1.5, count=len(contacts))
    for i, contact in enumerate(contacts):
        add(client, contact, 5, f"ref-kill-{i}")
    wait_for(lambda: seeded.stats()["arrived"].get("treazure.transaction", 0) >= 2, 30,
             "bookings in flight")
    worker.kill()
    start_worker(**FAST)
    # The killed worker's messages stay unacknowledged in Redis until the visibility
    # timeout; beat's sweep is what finds their rows once their lease has run out.
    start_worker("beat", **FAST, POINTS_SWEEP_INTERVAL_SECONDS="5")
    ledger = Ledger(store)
    refs = [f"ref-kill-{i}" for i in range(len(contacts))]

    def all_applied() -> bool:
        return all(getattr(ledger.get(ref), "state", None) == "applied" for ref in refs)

    wait_for(all_applied, 120, "every transaction applied after the kill")
    for contact in contacts:
        assert bookings(seeded, contact) == 1, contact
        assert engage_equals_treazure(seeded, contact)


def test_a_sync_and_transactions_on_the_same_contacts_leave_no_stale_balance(
    sim: Sim, start_worker: Callable[..., CeleryProcess], client: Celery, store: Store
) -> None:
    sim.post("seed", {"contacts": 20_000})
    contacts = seeded_ids(0, 20_000)[::100]  # 200 contacts, spread over the job's pages
    start_worker(**FAST, ENGAGE_RATE_LIMIT="20")  # a slow sync: the two flows overlap
    run = client.send_task(SYNC)
    wait_for(lambda: sim.stats()["arrived"].get("engage.balances", 0) >= 1, 60,
             "the sync pushing")
    # Booked after the job's snapshot: the sync holds an older balance for each of these.
    results = [add(client, contact, 7, f"ref-mix-{i}") for i, contact in enumerate(contacts)]
    summary = run.get(timeout=300)
    assert summary["status"] == "succeeded"
    assert all(r.get(timeout=120)["state"] in ("applied", "booked") for r in results)
    wait_applied(store, *(f"ref-mix-{i}" for i in range(len(contacts))))
    check = sim.compare()
    assert check["mismatch_count"] == 0, check


def test_invalid_arguments_fail_the_task_before_any_remote_call(
    seeded: Sim, start_worker: Callable[..., CeleryProcess], client: Celery, store: Store
) -> None:
    start_worker(**FAST)
    with pytest.raises(Exception, match="description: at most 100 characters"):
        add(client, CONTACTS[3], 5, "ref-long", description="x" * 101).get(timeout=30)
    with pytest.raises(Exception, match="amount: at most 2 decimals"):
        add(client, CONTACTS[3], "1.005", "ref-decimals").get(timeout=30)
    assert seeded.stats()["arrived"].get("treazure.transaction", 0) == 0
    assert Ledger(store).get("ref-long") is None


def test_insufficient_balance_fails_clearly_and_replay_books_nothing_twice(
    seeded: Sim, start_worker: Callable[..., CeleryProcess], client: Celery, store: Store,
    worker_env: dict[str, str],
) -> None:
    contact = CONTACTS[4]
    start_worker(**FAST)
    result = add(client, contact, "-100000000", "ref-poor").get(timeout=60)
    assert result["state"] == "failed" and "insufficient balance" in result["reason"]
    assert bookings(seeded, contact) == 0
    cli = [str(BIN / "pointsync"), "points"]
    env = {**os.environ, **worker_env}
    listed = subprocess.run([*cli, "failed", "--json"], env=env, capture_output=True,
                            text=True, check=True)
    assert [row["reference"] for row in json.loads(listed.stdout)] == ["ref-poor"]
    replay = subprocess.run([*cli, "replay", "ref-poor", "--json", "--timeout", "60"], env=env,
                            capture_output=True, text=True)
    assert replay.returncode == 1  # refused again, for the same reason
    assert "insufficient balance" in json.loads(replay.stdout)["reason"]
    assert bookings(seeded, contact) == 0


def test_cli_points_add_books_and_waits(
    seeded: Sim, start_worker: Callable[..., CeleryProcess], worker_env: dict[str, str],
    store: Store,
) -> None:
    start_worker(**FAST)
    contact = CONTACTS[5]
    command = [str(BIN / "pointsync"), "points", "add", contact, "2.25", "--description",
               "goodwill", "--reference", "ref-cli", "--json"]
    env = {**os.environ, **worker_env}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["state"] == "applied" and shown["source"] == "cli"
    assert bookings(seeded, contact) == 1
    refused = subprocess.run([*command[:4], "1", "--description", "y" * 101], env=env,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "description" in refused.stderr


@pytest.fixture
def web_process(worker_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[WebProcess, str]]:
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    env = {**worker_env, "PORT": str(free_port()), "WEBHOOK_SECRET": secret,
           "WEB_API_KEY": "it-key"}
    process = start_web(env, tmp_path / "web.log")
    yield process, secret
    process.stop()


def test_signed_webhooks_reach_treazure_and_engage_once(
    seeded: Sim, start_worker: Callable[..., CeleryProcess], store: Store,
    web_process: tuple[WebProcess, str],
) -> None:
    web, secret = web_process
    start_worker(**FAST)
    contact = CONTACTS[6]
    event_id = f"evt_{uuid.uuid4().hex}"
    body = json.dumps({
        "eventType": "loyalty.addPoints", "id": event_id, "isEncrypted": False,
        "tenant": "it", "payload": {"amount": 25, "contactId": contact, "pointDefinitionId": 1,
                                    "source": "Manual", "description": "Review bonus"}})
    def deliver(text: str, key: str = secret) -> httpx.Response:
        now = datetime.now(UTC)
        headers = {"svix-id": "msg_1", "svix-timestamp": str(int(now.timestamp())),
                   "svix-signature": Webhook(key).sign("msg_1", now, text),
                   "content-type": "application/json"}
        return httpx.post(f"{web.url}/webhooks/engage", content=text, headers=headers)

    assert deliver(body).status_code == 202
    wait_applied(store, event_id)
    replayed = deliver(body)  # Svix delivers it again
    assert replayed.status_code == 202 and replayed.json()["duplicate"] is True
    tampered = body.replace('"amount": 25', '"amount": 2500')
    now = datetime.now(UTC)
    headers = {"svix-id": "msg_1", "svix-timestamp": str(int(now.timestamp())),
               "svix-signature": Webhook(secret).sign("msg_1", now, body),
               "content-type": "application/json"}
    assert httpx.post(f"{web.url}/webhooks/engage", content=tampered,
                      headers=headers).status_code == 401
    other = "whsec_" + base64.b64encode(b"x" * 24).decode()
    assert deliver(body.replace(event_id, "evt_other"), other).status_code == 401
    assert bookings(seeded, contact) == 1
    assert engage_equals_treazure(seeded, contact)


def test_a_row_whose_enqueue_failed_is_finished_by_the_sweep(
    seeded: Sim, start_worker: Callable[..., CeleryProcess], client: Celery, store: Store
) -> None:
    """The web process committed the row, then could not reach Redis: no message exists."""
    contact = CONTACTS[7]
    ledger = Ledger(store)
    ledger.record(validate_request(contact, 4, "webhook, Redis down", "evt_lost"), "webhook")
    with store.engine.begin() as conn:  # recorded a while ago, never touched since
        conn.execute(update(point_transactions).values(
            updated_at=datetime.now(UTC) - timedelta(minutes=10)))
    start_worker(**FAST)
    client.send_task(SWEEP)  # a sweep keeps no result: the row itself shows it worked
    wait_applied(store, "evt_lost")
    assert bookings(seeded, contact) == 1
    assert engage_equals_treazure(seeded, contact)
