"""GET /metrics on the real app: a store (SQLite file and PostgreSQL) holding runs and ledger
rows, a real Redis holding response counts and queued messages, scraped and parsed with
prometheus_client's own parser; and with Redis or the database down."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event, update

from tests.support.web import CLOSED_REDIS, ENV, REDIS_DB11
from worker.base.point_request import PointRequest
from worker.base.settings import WebSettings
from worker.base.telemetry import RESPONSES_KEY
from worker.faces.runtime import prepare_store
from worker.faces.web import metrics as web
from worker.store.database import Store
from worker.store.engine import make_engine
from worker.store.ledger import Ledger, point_transactions
from worker.store.runs import RUN_COUNTS

CONTACT = "6c1e2f4a-0b1c-4d2e-9f00-1a2b3c4d5e6f"
# The keys this test writes and clears; the database is the web tests' own by default.
REDIS_URL = os.environ.get("WEB_METRICS_TEST_REDIS_URL", REDIS_DB11)
BROKER_KEYS = ("celery", "celery:9", "pointsync.history", "pointsync.history:9", "unacked")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, frozenset(labels.items())]


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


@pytest.fixture
def shared_redis() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    client.delete(RESPONSES_KEY, *BROKER_KEYS)
    yield client
    client.delete(RESPONSES_KEY, *BROKER_KEYS)
    client.close()


@pytest.fixture
def metrics_settings(make_settings: Callable[..., WebSettings], database_url: str) -> WebSettings:
    return make_settings(DATABASE_URL=database_url, REDIS_URL=REDIS_URL)


@pytest.fixture
def metrics_store(metrics_settings: WebSettings) -> Iterator[Store]:
    store = prepare_store(metrics_settings.DATABASE_URL)
    yield store
    store.engine.dispose()  # PostgreSQL: the database is dropped after the test


async def scrape(client: Any) -> tuple[Samples, float, float]:
    """The parsed answer, and the clock just before and just after the request."""
    before = time.time()
    response = await client.get("/metrics")
    after = time.time()
    assert response.status == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
    return parse(await response.text()), before, after


def run(store: Store, status: str, started: datetime, *, explicit: bool = False,
        seconds: float | None = None, **counts: int) -> int:
    run_id = store.start_run(started_at=started, window_from=started - timedelta(hours=2),
                             window_to=started, explicit_window=explicit, task_id=None)
    if status != "running":
        finished = started + timedelta(seconds=seconds or 0)
        store.update_run(run_id, status=status, finished_at=finished,
                         duration_seconds=seconds, **counts)
    return run_id


def transaction(ledger: Ledger, reference: str, state: str, age: timedelta) -> float:
    """A row in `state`, recorded `age` ago; when that was (Unix time)."""
    ledger.record(PointRequest(contact_id=CONTACT, amount_cents=250, description="bonus",
                               reference=reference), "task")
    if state == "booked":
        ledger.booked(reference, 1250, 1)
    elif state == "applied":
        ledger.applied([reference], [])
    elif state == "failed":
        ledger.fail(reference, "insufficient balance")
    created = datetime.now(UTC) - age
    with ledger.engine.begin() as conn:
        conn.execute(update(point_transactions)
                     .where(point_transactions.c.reference == reference)
                     .values(created_at=created))
    return created.timestamp()


async def test_metrics_show_lag_runs_ledger_responses_and_queues(
    serve: Callable[..., Any], metrics_settings: WebSettings, metrics_store: Store,
    shared_redis: redis.Redis,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    succeeded_at = now - timedelta(minutes=50)
    run(metrics_store, "succeeded", succeeded_at, seconds=12.5, fetched=120,
        unique_contacts=100, unchanged=60, stale=2, pushed=37, rejected=1)
    run(metrics_store, "succeeded", now - timedelta(minutes=40), explicit=True, seconds=3,
        pushed=9)  # a manual window: a successful run, but not the watermark
    run(metrics_store, "failed", now - timedelta(minutes=10), seconds=4.25, fetched=7)
    run(metrics_store, "skipped", now - timedelta(minutes=5))
    ledger = Ledger(metrics_store)
    created = {reference: transaction(ledger, reference, state, timedelta(minutes=minutes))
               for reference, state, minutes in [
                   ("r1", "received", 1), ("r2", "received", 7), ("b1", "booked", 3),
                   ("a1", "applied", 90), ("a2", "applied", 1), ("a3", "applied", 1),
                   ("f1", "failed", 120)]}
    shared_redis.hset(RESPONSES_KEY, mapping={
        "engage:202": 40, "engage:429": 3, "treazure:200": 12, "treazure:connect_error": 2})
    shared_redis.lpush("celery", "m1", "m2")
    shared_redis.lpush("celery:9", "m3")
    shared_redis.lpush("pointsync.history:9", "h1", "h2", "h3", "h4")
    shared_redis.hset("unacked", "tag", "m0")

    client = await serve(metrics_settings, metrics_store, lambda kwargs: None)
    samples, before, after = await scrape(client)

    watermark = succeeded_at.timestamp()
    assert value(samples, "pointsync_sync_watermark_timestamp_seconds") == watermark
    assert before - watermark <= value(samples, "pointsync_sync_lag_seconds") <= after - watermark

    # The newest run was skipped: the last finished one is the failed run.
    assert value(samples, "pointsync_newest_sync_run_status", status="skipped") == 1
    assert value(samples, "pointsync_newest_sync_run_status", status="failed") == 0
    assert value(samples, "pointsync_last_sync_run_success") == 0
    assert value(samples, "pointsync_last_sync_run_duration_seconds") == 4.25
    assert value(samples, "pointsync_last_sync_run_finished_timestamp_seconds") == (
        now - timedelta(minutes=10) + timedelta(seconds=4.25)).timestamp()
    assert value(samples, "pointsync_last_sync_run_rows", count="fetched") == 7
    assert value(samples, "pointsync_last_sync_run_rows", count="pushed") == 0
    assert value(samples, "pointsync_last_successful_sync_run_finished_timestamp_seconds") == (
        now - timedelta(minutes=40) + timedelta(seconds=3)).timestamp()

    for state, count in {"received": 2, "booked": 1, "applied": 3, "failed": 1}.items():
        assert value(samples, "pointsync_point_transactions", state=state) == count
    oldest = value(samples, "pointsync_point_transactions_oldest_pending_age_seconds")
    assert before - created["r2"] <= oldest <= after - created["r2"]  # not a1 nor f1

    assert value(samples, "pointsync_remote_responses_total", service="engage",
                 status="429") == 3
    assert value(samples, "pointsync_remote_responses_total", service="engage",
                 status="202") == 40
    assert value(samples, "pointsync_remote_responses_total", service="treazure",
                 status="200") == 12
    assert value(samples, "pointsync_remote_responses_total", service="treazure",
                 status="connect_error") == 2
    assert value(samples, "pointsync_queue_depth", queue="celery") == 3
    assert value(samples, "pointsync_queue_depth", queue="pointsync.history") == 4
    assert value(samples, "pointsync_queue_unacked") == 1
    assert value(samples, "pointsync_scrape_errors", source="database") == 0
    assert value(samples, "pointsync_scrape_errors", source="redis") == 0


async def test_the_last_run_s_counts_come_from_the_last_finished_run(
    serve: Callable[..., Any], metrics_settings: WebSettings, metrics_store: Store,
    shared_redis: redis.Redis,
) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    counts = dict(zip(RUN_COUNTS, (500, 480, 400, 3, 76, 1), strict=True))
    run(metrics_store, "succeeded", start, seconds=2.5, **counts)
    run(metrics_store, "running", start + timedelta(minutes=25))

    client = await serve(metrics_settings, metrics_store, lambda kwargs: None)
    samples, _, _ = await scrape(client)

    assert value(samples, "pointsync_newest_sync_run_status", status="running") == 1
    assert value(samples, "pointsync_last_sync_run_success") == 1
    assert value(samples, "pointsync_last_sync_run_duration_seconds") == 2.5
    for kind, count in counts.items():
        assert value(samples, "pointsync_last_sync_run_rows", count=kind) == count
    finished = (start + timedelta(seconds=2.5)).timestamp()
    assert value(samples, "pointsync_last_sync_run_finished_timestamp_seconds") == finished
    assert value(samples,
                 "pointsync_last_successful_sync_run_finished_timestamp_seconds") == finished


async def test_a_fresh_install_has_no_lag_and_every_state_at_zero(
    serve: Callable[..., Any], metrics_settings: WebSettings, metrics_store: Store,
    shared_redis: redis.Redis,
) -> None:
    client = await serve(metrics_settings, metrics_store, lambda kwargs: None)
    samples, _, _ = await scrape(client)

    assert not {"pointsync_sync_lag_seconds", "pointsync_sync_watermark_timestamp_seconds",
                "pointsync_last_sync_run_success", "pointsync_newest_sync_run_status",
                "pointsync_remote_responses_total"} & names(samples)
    for state in ("received", "booked", "applied", "failed"):
        assert value(samples, "pointsync_point_transactions", state=state) == 0
    assert value(samples, "pointsync_point_transactions_oldest_pending_age_seconds") == 0
    assert value(samples, "pointsync_queue_depth", queue="celery") == 0
    assert value(samples, "pointsync_scrape_errors", source="database") == 0
    assert value(samples, "pointsync_scrape_errors", source="redis") == 0


async def test_redis_down_still_answers_with_the_database_s_metrics(
    serve: Callable[..., Any], make_settings: Callable[..., WebSettings], sqlite_url: str,
) -> None:
    settings = make_settings(DATABASE_URL=sqlite_url, REDIS_URL=CLOSED_REDIS)
    store = prepare_store(sqlite_url)
    transaction(Ledger(store), "f1", "failed", timedelta(minutes=1))
    client = await serve(settings, store, lambda kwargs: None)
    samples, _, _ = await scrape(client)

    assert value(samples, "pointsync_scrape_errors", source="redis") == 1
    assert value(samples, "pointsync_scrape_errors", source="database") == 0
    assert value(samples, "pointsync_point_transactions", state="failed") == 1
    assert not {"pointsync_queue_depth", "pointsync_remote_responses_total"} & names(samples)


async def test_database_down_still_answers_with_redis_s_metrics(
    serve: Callable[..., Any], make_settings: Callable[..., WebSettings], sqlite_url: str,
    shared_redis: redis.Redis, tmp_path,
) -> None:
    settings = make_settings(DATABASE_URL=sqlite_url, REDIS_URL=REDIS_URL)
    shared_redis.hset(RESPONSES_KEY, "engage:429", 5)
    missing = Store(make_engine(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'x.db'}"))
    client = await serve(settings, missing, lambda kwargs: None)
    samples, _, _ = await scrape(client)

    assert value(samples, "pointsync_scrape_errors", source="database") == 1
    assert value(samples, "pointsync_scrape_errors", source="redis") == 0
    assert value(samples, "pointsync_remote_responses_total", service="engage",
                 status="429") == 5
    assert not {"pointsync_point_transactions", "pointsync_sync_lag_seconds"} & names(samples)


async def test_the_scrape_reads_off_the_event_loop_and_shows_no_secret(
    serve: Callable[..., Any], metrics_settings: WebSettings, metrics_store: Store,
    shared_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[str] = []
    real_scrape = web.scrape

    def noting_scrape(*args: Any) -> bytes:
        threads.append(threading.current_thread().name)
        return real_scrape(*args)

    monkeypatch.setattr(web, "scrape", noting_scrape)
    client = await serve(metrics_settings, metrics_store, lambda kwargs: None)
    response = await client.get("/metrics")
    text = await response.text()

    assert response.status == 200
    assert len(threads) == 1 and threads[0].startswith("pointsync-web")
    for name in ("TREAZURE_CLIENT_SECRET", "ENGAGE_API_KEY", "WEBHOOK_SECRET", "WEB_API_KEY"):
        assert ENV[name] not in text


async def test_a_scrape_counts_the_ledger_without_a_group_by(
    serve: Callable[..., Any], metrics_settings: WebSettings, metrics_store: Store,
    shared_redis: redis.Redis,
) -> None:
    """A full GROUP BY over millions of ledger rows on every scrape would load the database
    for a gauge; final states come from running totals, open ones from the state index."""
    ledger = Ledger(metrics_store)
    for reference in ("m1", "m2", "m3"):
        ledger.record(PointRequest(CONTACT, 100, "test", reference), "task")
    ledger.booked("m1", 100, 1)
    ledger.applied(["m1"], [])
    ledger.fail("m2", "refused")
    statements: list[str] = []
    event.listen(metrics_store.engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *rest: statements.append(statement))
    client = await serve(metrics_settings, metrics_store, lambda kwargs: None)

    samples, _, _ = await scrape(client)

    assert {state: value(samples, "pointsync_point_transactions", state=state)
            for state in ("received", "booked", "applied", "failed")} == \
        {"received": 1, "booked": 0, "applied": 1, "failed": 1}
    ledger_reads = [s for s in statements if "point_transactions" in s]
    assert ledger_reads and not [s for s in ledger_reads if "GROUP BY" in s.upper()]
