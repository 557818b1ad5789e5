"""The web process as operators run it: secrets kept out, the Celery send, start-up."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.web import (
    API_KEY,
    CLOSED_REDIS,
    CONTACT,
    ENV,
    OTHER_SECRET,
    REDIS_DB11,
    SECRET,
    event,
    signed,
)
from worker.base.settings import WebSettings
from worker.faces.web.app import main
from worker.faces.web.queueing import celery_enqueue
from worker.flows.points.batch import BOOK_TURN
from worker.store.database import Store
from worker.store.ledger import Ledger

# A wait this long means the answer hung: a hang guard, not a speed figure.
HANG_SECONDS = 60

pytestmark = pytest.mark.integration  # starts processes

SECRETS = (SECRET, SECRET.removeprefix("whsec_"), API_KEY, ENV["TREAZURE_CLIENT_SECRET"],
           ENV["ENGAGE_API_KEY"])


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_DB11)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


async def test_no_secret_in_any_answer_or_log(
    serve: Callable[..., Any], make_settings: Callable[..., WebSettings], sqlite_url: str,
    store: Store, caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(DATABASE_URL=sqlite_url, REDIS_URL=CLOSED_REDIS)

    def broker_down(kwargs: dict[str, str]) -> None:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6399. Connection refused.")

    client = await serve(settings, store, broker_down)
    texts = []
    caplog.set_level(logging.DEBUG)
    for body, sign in [
        (event("evt_1"), {}),  # accepted, broker down
        (event("evt_1"), {"secret": OTHER_SECRET}),  # wrong secret
        (event("evt_2"), {"age": timedelta(minutes=10)}),  # stale
        (event("evt_3", description="x" * 101), {}),  # invalid
        (b"{", {}),  # not JSON
    ]:
        response = await client.post("/webhooks/engage", data=body, headers=signed(body, **sign))
        texts.append(await response.text())
    texts.append(await (await client.get("/health")).text())

    assert len(texts) == 6 and "Connection refused" in caplog.text
    for secret in SECRETS:
        assert all(secret not in answer for answer in texts)
        assert secret not in caplog.text


def test_celery_enqueue_puts_one_booking_task_on_the_broker_per_turn(
    make_settings: Callable[..., WebSettings], broker: redis.Redis
) -> None:
    enqueue = celery_enqueue(make_settings())
    for reference in ("evt_1", "evt_2"):  # recorded before the queued task ran
        enqueue({"contact_id": CONTACT, "amount": "12.50", "description": "Review bonus",
                 "reference": reference})

    messages = [json.loads(raw) for raw in broker.lrange("celery", 0, -1)]
    assert len(messages) == 1  # one task books both rows
    assert messages[0]["headers"]["task"] == "pointsync.book_received"
    # It runs a moment later, so that the rows recorded meanwhile ride along.
    assert messages[0]["headers"]["eta"] is not None
    args, sent, _ = json.loads(base64.b64decode(messages[0]["body"]))
    assert (args, sent) == ([], {})  # the task reads the ledger, not its message
    # No result channel was subscribed by the sender (it has no result backend). The
    # channel list is the whole server's: other processes' channels are left out.
    task_id = messages[0]["headers"]["id"]
    assert [c for c in broker.pubsub_channels() if task_id.encode() in c] == []

    broker.delete(BOOK_TURN)  # as the task does before it reads the ledger
    enqueue({"contact_id": CONTACT, "amount": "1", "description": "later",
             "reference": "evt_3"})
    assert broker.llen("celery") == 2  # a row recorded after that queues the next task


async def test_real_send_with_broker_down_answers_202_with_the_row_recorded(
    serve: Callable[..., Any], make_settings: Callable[..., WebSettings], sqlite_url: str,
    store: Store,
) -> None:
    """The queueing's retries are bounded (a couple of tries, under a second apart), so the
    answer comes; the wait below only turns a hang into a failure."""
    settings = make_settings(DATABASE_URL=sqlite_url, REDIS_URL=CLOSED_REDIS)
    client = await serve(settings, store)  # the real Celery send
    body = event("evt_1")
    response = await asyncio.wait_for(
        client.post("/webhooks/engage", data=body, headers=signed(body)), HANG_SECONDS)

    assert response.status == 202
    row = Ledger(store).get("evt_1")
    assert row is not None and row.state == "received"


@pytest.mark.parametrize(("name", "value"), [
    ("WEBHOOK_SECRET", None), ("WEBHOOK_SECRET", "not-a-whsec"), ("WEBHOOK_SECRET", "whsec_"),
    ("WEBHOOK_SECRET", "whsec_abcde"), ("WEB_API_KEY", None),
])
def test_main_stops_with_78_on_a_bad_setting(
    make_settings: Callable[..., WebSettings], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], name: str, value: str | None,
) -> None:
    make_settings()
    if value is None:
        monkeypatch.delenv(name)
    else:
        monkeypatch.setenv(name, value)
    from worker.base import settings as settings_module

    settings_module.clear_cache()
    with pytest.raises(SystemExit) as stopped:
        main()

    assert stopped.value.code == 78
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and name in err
    if value and value.removeprefix("whsec_"):  # the secret itself is never echoed
        assert value.removeprefix("whsec_") not in err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_python_m_worker_web_serves_health(tmp_path: Path, broker: redis.Redis) -> None:
    port = _free_port()
    env = {**{k: v for k, v in os.environ.items() if k not in WebSettings.model_fields},
           **ENV, "PORT": str(port), "DATABASE_URL": f"sqlite:///{tmp_path / 'web.db'}"}
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = str(root)
    process = subprocess.Popen([sys.executable, "-m", "worker.faces.web"], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        answer = None
        deadline = time.monotonic() + 30
        while answer is None and time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    answer = (r.status, json.loads(r.read()))
            except OSError:
                time.sleep(0.1)
        assert answer == (200, {"status": "ok", "redis": "ok", "database": "ok"})
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)

    assert process.returncode == 0, output
    assert f"pointsync web listening on http://127.0.0.1:{port}" in output
    assert all(secret not in output for secret in SECRETS)
