"""/metrics as operators get it: a real Celery worker syncs against the simulators with
Engage throttling some pushes, then a real web process answers GET /metrics with every
response the worker got, counted once, and the run it recorded."""

from __future__ import annotations

import base64
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from celery import Celery
from prometheus_client.parser import text_string_to_metric_families

from sims.harness import CeleryProcess, free_port, start_web
from tests.support.integration import Sim
from worker.store.database import Store

pytestmark = pytest.mark.integration

TASK = "pointsync.sync_balances"
CONTACTS = 3000
THROTTLED = 3  # Engage answers this many pushes 429 first
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    response = httpx.get(f"{url}/metrics", timeout=30, trust_env=False)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples}


def responses(samples: Samples) -> Counter[tuple[str, str]]:
    counted: Counter[tuple[str, str]] = Counter()
    for (name, labels), count in samples.items():
        if name == "pointsync_remote_responses_total":
            found = dict(labels)
            counted[found["service"], found["status"]] = int(count)
    return counted


def answered_by_sim(sim: Sim) -> Counter[tuple[str, str]]:
    """What the simulators answered, as (service, status): `engage.balances 429` → engage, 429."""
    counted: Counter[tuple[str, str]] = Counter()
    for key, count in sim.stats()["requests"].items():
        target, status = key.split(" ")
        counted[target.split(".")[0], status] += count
    return counted


def test_metrics_after_a_throttled_sync_count_every_response_once(
    sim: Sim, start_worker: Callable[..., CeleryProcess], client: Celery, store: Store,
    worker_env: dict[str, str], tmp_path: Path,
) -> None:
    sim.post("seed", {"contacts": CONTACTS})
    sim.post("faults", {"target": "engage.balances", "kind": "status", "status": 429,
                        "retry_after": "0", "count": THROTTLED})
    # No history refresh after the sync: its Treazure calls would go on after the result.
    start_worker(HISTORY_AFTER_SYNC="false")

    sent_at = time.time()
    result = client.send_task(TASK).get(timeout=120)
    assert result["status"] == "succeeded" and result["pushed"] == CONTACTS
    assert sim.stats()["faults_pending"] == 0  # every injected 429 was met

    web = start_web({**worker_env, "PORT": str(free_port()), "WEB_API_KEY": "metrics-test",
                     "WEBHOOK_SECRET": "whsec_" + base64.b64encode(b"k" * 32).decode()},
                    tmp_path / "web.log")
    try:
        samples = scrape(web.url)
        scraped_at = time.time()
    finally:
        web.stop()

    # Counted by the worker before the task returned: all there once its result is in.
    counted = responses(samples)
    assert counted[("engage", "429")] >= THROTTLED
    assert counted[("engage", "202")] > 0 and counted[("treazure", "200")] > 0
    assert counted == answered_by_sim(sim)  # each answer once, nothing else

    def value(name: str, **labels: str) -> float:
        return samples[name, frozenset(labels.items())]

    watermark = value("pointsync_sync_watermark_timestamp_seconds")
    assert watermark == store.watermark().timestamp()  # type: ignore[union-attr]
    assert sent_at <= watermark  # the run this test sent set it
    assert 0 <= value("pointsync_sync_lag_seconds") <= scraped_at - sent_at
    assert value("pointsync_last_sync_run_success") == 1
    assert value("pointsync_newest_sync_run_status", status="succeeded") == 1
    assert value("pointsync_last_sync_run_rows", count="pushed") == CONTACTS
    assert value("pointsync_last_sync_run_rows", count="fetched") == result["fetched"]
    assert value("pointsync_last_sync_run_duration_seconds") == pytest.approx(
        result["duration_seconds"])
    assert value("pointsync_queue_depth", queue="celery") == 0
    assert value("pointsync_scrape_errors", source="redis") == 0
    assert value("pointsync_scrape_errors", source="database") == 0
