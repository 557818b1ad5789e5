"""The balance sync through a real Celery worker on real Redis, against the simulators."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable

import pytest
import redis
from celery import Celery
from sqlalchemy import func, select

from sims.harness import BIN, CeleryProcess
from tests.support.integration import Sim, wait_for
from worker.flows.sync.locking import RUN_LOCK
from worker.store.contacts import contact_balances
from worker.store.database import Store

pytestmark = pytest.mark.integration  # starts processes

TASK = "pointsync.sync_balances"


def recorded(store: Store) -> int:
    """Contacts whose sent balance the store holds."""
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(contact_balances)).scalar_one()


def test_sync_end_to_end_then_nothing_to_do(
    sim: Sim, start_worker: Callable[..., CeleryProcess], client: Celery, store: Store
) -> None:
    sim.post("seed", {"contacts": 5000, "engage_unknown": 7})
    start_worker()
    first = client.send_task(TASK).get(timeout=120)
    assert first["status"] == "succeeded"
    assert (first["fetched"], first["unique_contacts"]) == (5000, 5000)
    assert (first["pushed"], first["rejected"]) == (4993, 7)
    check = sim.compare()
    assert check["checked"] == 4993 and check["mismatch_count"] == 0
    stats = sim.stats()
    assert stats["engage_push_items"] == 5000
    # Full batches of 1,000, plus at most one partial tail batch per lane (4 lanes).
    assert stats["engage_push_requests"] <= 5 + 3

    second = client.send_task(TASK).get(timeout=120)
    # It re-reads only the overlap before the first run; nothing there is new.
    assert second["pushed"] == 0
    assert 0 < second["fetched"] < 5000
    assert second["fetched"] == second["unchanged"] + second["rejected"]
    assert store.watermark() is not None
    # Every process of the worker used the one shared token.
    assert sim.stats()["token_requests"] == 1


def test_changes_after_a_run_are_picked_up_by_the_next(
    sim: Sim, start_worker: Callable[..., CeleryProcess], client: Celery
) -> None:
    sim.post("seed", {"contacts": 2000})
    start_worker()
    client.send_task(TASK).get(timeout=120)
    sim.post("mutate_random", {"count": 300})
    again = client.send_task(TASK).get(timeout=120)
    assert again["pushed"] == 300
    assert sim.compare()["mismatch_count"] == 0


def test_two_runs_never_overlap(
    sim: Sim, start_worker: Callable[..., CeleryProcess], client: Celery, redis_url: str
) -> None:
    sim.post("seed", {"contacts": 3000})
    sim.post("faults", {"target": "treazure.balances_result", "kind": "latency",
                        "seconds": 5, "count": 1})
    start_worker()
    slow = client.send_task(TASK)
    wait_for(lambda: redis.Redis.from_url(redis_url).exists(RUN_LOCK) == 1, 30, "the run lock")
    second = client.send_task(TASK).get(timeout=60)
    assert second["status"] == "skipped"
    assert slow.get(timeout=120)["status"] == "succeeded"


def test_worker_killed_mid_sync_leaves_watermark_and_next_run_completes(
    sim: Sim, start_worker: Callable[..., CeleryProcess], client: Celery, store: Store,
    redis_url: str,
) -> None:
    total = 20_000
    sim.post("seed", {"contacts": total})
    # Small, slow batches so the kill lands mid-run: 200 pushes at 25/s ≈ 8 s.
    slow = {"ENGAGE_BATCH_SIZE": "100", "ENGAGE_RATE_LIMIT": "25"}
    doomed = start_worker(**slow)
    client.send_task(TASK)
    # Kill once the run has written some of what it pushed (it writes every 2 s).
    wait_for(lambda: recorded(store) > 0, 60, "the run's first write")
    doomed.kill()
    pushed_before_kill = sim.stats()["engage_push_items"]
    assert pushed_before_kill < total
    (killed_run,) = store.recent_runs()
    assert killed_run["status"] == "running"
    assert store.watermark() is None

    start_worker()
    # The dead holder's lock expires by itself (SYNC_LOCK_TTL_SECONDS=3).
    wait_for(lambda: redis.Redis.from_url(redis_url).exists(RUN_LOCK) == 0, 30, "lock expiry")
    redo = client.send_task(TASK).get(timeout=180)
    assert redo["status"] == "succeeded"
    assert redo["unique_contacts"] == total
    # What the killed run recorded is not pushed again; the rest is.
    assert 0 < redo["pushed"] < total
    assert redo["pushed"] + redo["unchanged"] == total
    assert sim.compare()["mismatch_count"] == 0
    assert store.get_run(killed_run["id"])["status"] == "abandoned"
    assert store.watermark() is not None


def test_beat_dispatches_the_scheduled_sync(
    sim: Sim, start_worker: Callable[..., CeleryProcess], store: Store
) -> None:
    sim.post("seed", {"contacts": 100})
    start_worker()
    start_worker("beat", SYNC_INTERVAL_SECONDS="10")
    wait_for(lambda: any(r["status"] == "succeeded" for r in store.recent_runs()), 60,
             "beat's first run")
    assert sim.compare()["mismatch_count"] == 0


def test_worker_refuses_to_start_on_a_missing_setting(redis_url: str) -> None:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("TREAZURE_", "ENGAGE_"))}
    env.update({"REDIS_URL": redis_url, "TREAZURE_CLIENT_ID": "c", "TREAZURE_CLIENT_SECRET": "s",
                "TREAZURE_LOYALTY_ID": "points", "ENGAGE_BASE_URL": "http://127.0.0.1:9",
                "ENGAGE_API_KEY": "k", "ENGAGE_RATE_LIMIT": "fast"})
    done = subprocess.run(
        [str(BIN / "celery"), "-A", "worker", "worker", "--concurrency", "1"],
        env=env, capture_output=True, text=True, timeout=60, cwd=os.getcwd(),
    )
    assert done.returncode == 78
    lines = [line for line in done.stderr.splitlines() if line.startswith("pointsync:")]
    assert len(lines) == 1
    assert "TREAZURE_BASE_URL is required" in lines[0]
    assert "ENGAGE_RATE_LIMIT is malformed" in lines[0]


def test_sync_rides_out_faults_on_both_apis(
    sim: Sim, start_worker: Callable[..., CeleryProcess], client: Celery
) -> None:
    sim.post("seed", {"contacts": 12_000})
    faults = [
        {"target": "treazure.token", "kind": "status", "status": 503, "body": "html"},
        {"target": "treazure.balances_start", "kind": "status", "status": 429,
         "retry_after": "1"},
        {"target": "treazure.balances_result", "kind": "status", "status": 502, "count": 2},
        {"target": "treazure.balances_result", "kind": "drop"},
        {"target": "treazure.balances_result", "kind": "expire"},  # restart the job once
        {"target": "engage.balances", "kind": "status", "status": 429, "retry_after": "1",
         "count": 2},
        {"target": "engage.balances", "kind": "status", "status": 503, "body": "text"},
        {"target": "engage.balances", "kind": "drop_after_apply"},
        {"target": "engage.balances", "kind": "latency", "seconds": 1.5},
    ]
    for fault in faults:
        sim.post("faults", fault)
    start_worker()
    summary = client.send_task(TASK).get(timeout=180)
    assert summary["status"] == "succeeded"
    assert summary["unique_contacts"] == 12_000
    assert summary["pushed"] + summary["unchanged"] == 12_000
    assert sim.compare()["mismatch_count"] == 0
    assert sim.stats()["faults_pending"] == 0  # every injected fault was met


def test_a_permanent_refusal_fails_the_run_and_keeps_the_watermark(
    sim: Sim, start_worker: Callable[..., CeleryProcess], client: Celery, store: Store
) -> None:
    sim.post("seed", {"contacts": 500})
    sim.post("faults", {"target": "treazure.balances_start", "kind": "status",
                        "status": 400, "body": "json"})
    start_worker()
    result = client.send_task(TASK)
    with pytest.raises(Exception, match="HTTP 400"):
        result.get(timeout=60)
    (run,) = store.recent_runs()
    assert run["status"] == "failed" and "HTTP 400" in run["error"]
    assert store.watermark() is None
    assert client.send_task(TASK).get(timeout=60)["status"] == "succeeded"


def test_cli_sync_wait_prints_the_summary(
    sim: Sim, start_worker: Callable[..., CeleryProcess], worker_env: dict[str, str]
) -> None:
    sim.post("seed", {"contacts": 300})
    start_worker()
    done = subprocess.run(
        [str(BIN / "pointsync"), "sync", "--wait", "--json"],
        env={**os.environ, **worker_env}, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["status"], summary["pushed"]) == ("succeeded", 300)
    status = subprocess.run(
        [str(BIN / "pointsync"), "status", "--json"],
        env={**os.environ, **worker_env}, capture_output=True, text=True, timeout=60,
    )
    assert json.loads(status.stdout)["runs"][0]["pushed"] == 300


def test_a_revoked_token_is_renewed_once_for_every_process(
    sim: Sim, start_worker: Callable[..., CeleryProcess], client: Celery
) -> None:
    sim.post("seed", {"contacts": 1000})
    start_worker()
    assert client.send_task(TASK).get(timeout=60)["status"] == "succeeded"
    assert sim.stats()["token_requests"] == 1
    sim.post("tokens/revoke")  # Treazure forgets every token: the next call gets 401
    sim.post("mutate_random", {"count": 50})
    again = client.send_task(TASK).get(timeout=60)
    assert (again["status"], again["pushed"]) == ("succeeded", 50)
    assert sim.stats()["token_requests"] == 2
