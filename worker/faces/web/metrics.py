"""GET /metrics: what Flower cannot know, read fresh from the database and Redis at every
scrape and rendered in Prometheus's text format.

Nothing is kept between scrapes (a collector on a new registry each time), so any number of
web processes answer alike. A source that cannot be read leaves its metrics out and sets
`pointsync_scrape_errors{source=…}` to 1; the scrape itself still answers.

Before the first successful sync there is no watermark: the watermark and lag metrics are
left out (not 0, which would read as "in step"; not NaN, which no alert compares).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from redis import Redis

from worker.base.settings import Settings
from worker.base.telemetry import read_responses
from worker.faces.celery.queues import queue_depths, unacked_count
from worker.faces.web import giftcard_metrics, relay_metrics
from worker.faces.web.context import SETTINGS, STORE, blocking
from worker.store.database import Store
from worker.store.ledger import Ledger
from worker.store.runs import RUN_COUNTS

log = logging.getLogger("pointsync.metrics")

STATES = ("received", "booked", "applied", "failed")
RUN_STATUSES = ("running", "succeeded", "failed", "skipped", "abandoned")
UNFINISHED = ("running", "skipped")  # a skipped run did no work: it says nothing of the last
RECENT_RUNS = 50  # how far back the last finished run is looked for
REDIS_TIMEOUT = 2.0  # seconds, per Redis call of a scrape


async def metrics(request: web.Request) -> web.Response:
    """Prometheus metrics, read at each scrape; a source that is down is reported in them."""
    app = request.app
    body = await blocking(app, scrape, app[STORE], app[SETTINGS].REDIS_URL, app[SETTINGS])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def scrape(store: Store, redis_url: str, settings: Settings | None = None) -> bytes:
    """One scrape's text, with a Redis connection of its own (run it off the event loop)."""
    redis = Redis.from_url(redis_url, socket_timeout=REDIS_TIMEOUT,
                           socket_connect_timeout=REDIS_TIMEOUT)
    try:
        return render(store, redis, settings=settings)
    finally:
        redis.close()


def render(store: Store, redis: Redis, now: float | None = None,
           settings: Settings | None = None) -> bytes:
    """The exposition text for the store and Redis as they are now (`now`: Unix seconds);
    with `settings` where Toggle is configured, its credits left too."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PointsyncCollector(store, redis, time.time() if now is None else now,
                                         settings))
    return generate_latest(registry)


class PointsyncCollector:
    """A prometheus_client collector that reads everything when it is collected."""

    def __init__(self, store: Store, redis: Redis, now: float,
                 settings: Settings | None = None) -> None:
        self.store, self.redis, self.now = store, redis, now
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        errors = GaugeMetricFamily(
            "pointsync_scrape_errors",
            "1 when this scrape could not read the source (its metrics are missing), else 0",
            labels=["source"])
        for source, read in (("database", self._database), ("redis", self._redis)):
            try:
                families = read()
            except Exception as exc:
                # The class only: a driver's message may name hosts; /health shows detail.
                log.warning("metrics: cannot read the %s (%s)", source, type(exc).__name__)
                errors.add_metric([source], 1)
                continue
            errors.add_metric([source], 0)
            yield from families
        yield errors

    # -- the database: sync runs and the ledger ----------------------------------------------

    def _database(self) -> list[Metric]:
        store, ledger = self.store, Ledger(self.store)
        families = _watermark(store.watermark(), self.now)
        families += _runs(store.recent_runs(RECENT_RUNS, kind="sync"),
                          store.last_success_finished())
        families += _ledger(ledger.state_totals(), ledger.oldest_open_created_at(), self.now)
        families += giftcard_metrics.states(store)
        families += relay_metrics.relays(store, self.now)
        return families

    # -- Redis: remote responses and the broker's queues -----------------------------------

    def _redis(self) -> list[Metric]:
        responses = CounterMetricFamily(
            "pointsync_remote_responses",
            "Answers from Treazure and Engage by HTTP status, summed over every worker and "
            "web process; status connect_error, timeout or dropped when none came",
            labels=["service", "status"])
        for (service, status), count in sorted(read_responses(self.redis).items()):
            responses.add_metric([service, status], count)
        depth = GaugeMetricFamily(
            "pointsync_queue_depth", "Celery messages waiting in the broker, per queue",
            labels=["queue"])
        for queue, waiting in queue_depths(self.redis).items():
            depth.add_metric([queue], waiting)
        unacked = GaugeMetricFamily(
            "pointsync_queue_unacked",
            "Celery messages handed to a worker and not yet acknowledged (running or reserved)",
            value=unacked_count(self.redis))
        return [responses, depth, unacked, *giftcard_metrics.toggle(self.redis, self.settings)]


def _seconds(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _watermark(watermark: datetime | None, now: float) -> list[Metric]:
    if watermark is None:
        return []
    at = watermark.timestamp()
    return [
        GaugeMetricFamily(
            "pointsync_sync_watermark_timestamp_seconds",
            "Start of the newest successful scheduled-window sync run (Unix time); the next "
            "run reads Treazure from here, less the overlap", value=at),
        GaugeMetricFamily(
            "pointsync_sync_lag_seconds",
            "Seconds since the watermark: how far Engage may be behind Treazure",
            value=max(0.0, now - at)),
    ]


def _runs(runs: list[dict[str, Any]], last_success: datetime | None) -> list[Metric]:
    families: list[Metric] = []
    if runs:
        newest = GaugeMetricFamily(
            "pointsync_newest_sync_run_status",
            "1 for the status of the newest sync run (running, skipped included), else 0",
            labels=["status"])
        for status in RUN_STATUSES:
            newest.add_metric([status], 1 if runs[0]["status"] == status else 0)
        families.append(newest)
    last = next((run for run in runs if run["status"] not in UNFINISHED), None)
    if last is not None:
        families.append(GaugeMetricFamily(
            "pointsync_last_sync_run_success",
            "1 when the last finished sync run succeeded, 0 when it failed or was abandoned",
            value=1 if last["status"] == "succeeded" else 0))
        families.append(GaugeMetricFamily(
            "pointsync_last_sync_run_duration_seconds",
            "How long the last finished sync run took", value=last["duration_seconds"] or 0))
        finished = _seconds(last["finished_at"])
        if finished is not None:
            families.append(GaugeMetricFamily(
                "pointsync_last_sync_run_finished_timestamp_seconds",
                "When the last finished sync run ended (Unix time)", value=finished))
        rows = GaugeMetricFamily(
            "pointsync_last_sync_run_rows",
            "Balances of the last finished sync run: fetched from Treazure, unique contacts, "
            "unchanged (Engage had them), stale (older than sent), pushed, rejected by Engage",
            labels=["count"])
        for count in RUN_COUNTS:
            rows.add_metric([count], last[count] or 0)
        families.append(rows)
    if last_success is not None:
        families.append(GaugeMetricFamily(
            "pointsync_last_successful_sync_run_finished_timestamp_seconds",
            "When the newest successful sync run ended (Unix time)",
            value=last_success.timestamp()))
    return families


def _ledger(counts: dict[str, int], oldest_open: datetime | None, now: float) -> list[Metric]:
    states = GaugeMetricFamily(
        "pointsync_point_transactions",
        "Point transactions in the ledger by state: received (not booked yet), booked "
        "(in Treazure, Engage to follow), applied, failed (`pointsync points failed`)",
        labels=["state"])
    for state in STATES:
        states.add_metric([state], counts.get(state, 0))
    age = GaugeMetricFamily(
        "pointsync_point_transactions_oldest_pending_age_seconds",
        "Age of the oldest transaction still received or booked; 0 when none is",
        value=max(0.0, now - oldest_open.timestamp()) if oldest_open is not None else 0)
    return [states, age]
