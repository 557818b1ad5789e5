"""POST /webhooks/toggle and /webhooks/nector on the real app and a real SQLite file: every
refusal records nothing, a genuine event is committed before its 200, a repeat records
nothing, Redis down costs the answer nothing, a database down is a 503."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from tests.support.relays import (
    NECTOR_SECRET,
    TOGGLE_SECRET,
    nector_body,
    nector_headers,
    toggle_body,
    toggle_headers,
)
from tests.support.web import EnqueueStub
from worker.base.settings import WebSettings
from worker.faces.web.app import create_app
from worker.faces.web.relay_webhooks import RELAY_ENQUEUE, settled
from worker.store.database import Store
from worker.store.engine import make_engine
from worker.store.relays import Relays, relay_deliveries, relay_events

RELAY_ENV = {"TOGGLE_WEBHOOK_SECRET": TOGGLE_SECRET,
             "ATREEMO_WEBHOOK_URL": "https://atreemo.test/toggle",
             "ATREEMO_WEBHOOK_SECRET": "atreemo-secret-55", "NECTOR_WEBHOOK_SECRET": NECTOR_SECRET,
             "CONTLO_API_KEY": "contlo-key-88"}


class BlockingEnqueue(EnqueueStub):
    """A broker send that hangs until released (Redis not answering)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def __call__(self, kwargs: dict[str, str]) -> None:
        self.release.wait(30)
        super().__call__(kwargs)


@pytest.fixture
def relay_settings(make_settings: Callable[..., WebSettings], sqlite_url: str) -> WebSettings:
    return make_settings(DATABASE_URL=sqlite_url, **RELAY_ENV)


@pytest.fixture
async def start() -> Any:
    clients: list[TestClient] = []

    async def start(settings: WebSettings, store: Store, enqueue: Any) -> TestClient:
        app = create_app(settings, store, EnqueueStub())
        if enqueue is not None:
            app[RELAY_ENQUEUE] = enqueue
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await settled(client.server.app)
        await client.close()


@pytest.fixture
async def client(start: Any, relay_settings: WebSettings, store: Store,
                 enqueue: EnqueueStub) -> TestClient:
    return await start(relay_settings, store, enqueue)


def counts(store: Store) -> tuple[int, int]:
    with store.engine.connect() as conn:
        return (conn.execute(select(func.count()).select_from(relay_events)).scalar_one(),
                conn.execute(select(func.count()).select_from(relay_deliveries)).scalar_one())


async def post_toggle(client: TestClient, body: bytes, headers: dict[str, str] | None = None):
    response = await client.post("/webhooks/toggle", data=body,
                                 headers=toggle_headers(body) if headers is None else headers)
    return response.status, await response.json()


async def post_nector(client: TestClient, body: bytes, headers: dict[str, str]):
    response = await client.post("/webhooks/nector", data=body, headers=headers)
    return response.status, await response.json()


async def test_a_toggle_event_is_recorded_before_200_and_its_subject_queued(
        client: TestClient, store: Store, enqueue: EnqueueStub) -> None:
    body = toggle_body(570)
    status, answer = await post_toggle(client, body)
    assert (status, answer) == (200, {"source": "toggle", "id": "570",
                                      "type": "card.balance_adjusted", "duplicate": False})
    event = Relays(store).event("toggle", "570")
    assert event is not None and event.body == body and event.subject == "card:501"
    assert Relays(store).get("toggle:570:atreemo").state == "received"  # type: ignore[union-attr]
    await settled(client.server.app)
    assert enqueue.calls == [{"source": "toggle", "subject": "card:501"}]


async def test_a_repeat_answers_200_and_records_nothing(
        client: TestClient, store: Store, enqueue: EnqueueStub) -> None:
    body = toggle_body(570)
    await post_toggle(client, body)
    status, answer = await post_toggle(client, body)
    assert status == 200 and answer["duplicate"] is True
    assert counts(store) == (1, 1)
    await settled(client.server.app)
    assert len(enqueue.calls) == 1


@pytest.mark.parametrize("headers", [
    {}, {"Toggle-Signature": ""}, {"Toggle-Signature": "00" * 32},
    toggle_headers(toggle_body(570), secret="somebody-else"),
    toggle_headers(toggle_body(571)),  # another body's signature
    {"Toggle-Signature": "é" * 64},
], ids=["missing", "empty", "zeros", "wrong-secret", "other-body", "non-ascii"])
async def test_a_bad_toggle_signature_is_401_and_nothing_recorded(
        client: TestClient, store: Store, enqueue: EnqueueStub, headers: dict[str, str]) -> None:
    status, answer = await post_toggle(client, toggle_body(570), headers)
    assert status == 401 and answer["error"].startswith("signature:")
    assert counts(store) == (0, 0) and enqueue.calls == []


async def test_a_nector_event_is_recorded_and_a_retry_with_a_fresh_timestamp_is_a_repeat(
        client: TestClient, store: Store) -> None:
    body = nector_body()
    status, answer = await post_nector(client, body, nector_headers(body, "dlv-1"))
    assert (status, answer["id"], answer["type"]) == (200, "dlv-1", "walletreward_create")
    status, answer = await post_nector(client, body, nector_headers(body, "dlv-1", age=30))
    assert status == 200 and answer["duplicate"] is True
    assert counts(store) == (1, 1)
    assert Relays(store).get("nector:dlv-1:contlo") is not None


@pytest.mark.parametrize("change", ["stale", "ahead", "wrong-secret", "no-hmac", "no-time",
                                    "not-a-time", "altered"])
async def test_a_bad_nector_signature_or_stale_timestamp_is_401_and_nothing_recorded(
        client: TestClient, store: Store, change: str) -> None:
    body = nector_body()
    headers = {
        "stale": lambda: nector_headers(body, "d", age=301),
        "ahead": lambda: nector_headers(body, "d", age=-301),
        "wrong-secret": lambda: nector_headers(body, "d", secret="other"),
        "no-hmac": lambda: {**nector_headers(body, "d"), "x-nector-webhook-hmac": ""},
        "no-time": lambda: {**nector_headers(body, "d"), "x-nector-timestamp": ""},
        "not-a-time": lambda: {**nector_headers(body, "d"), "x-nector-timestamp": "soon"},
        "altered": lambda: nector_headers(nector_body(customer="cust-2"), "d"),
    }[change]()
    status, answer = await post_nector(client, body, headers)
    assert status == 401
    assert answer["error"].startswith("timestamp:" if change in ("stale", "ahead", "not-a-time")
                                      else "signature:")
    assert counts(store) == (0, 0)


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"type": "order.created"}',
                                  b'{"id": 5}', b"\xff\xfe"])
async def test_a_signed_toggle_body_that_is_not_an_event_is_400(
        client: TestClient, store: Store, body: bytes) -> None:
    status, answer = await post_toggle(client, body)
    assert status == 400 and answer["error"].split(":")[0] in ("body", "id", "type")
    assert counts(store) == (0, 0)


async def test_a_signed_nector_body_without_its_delivery_id_or_json_is_400(
        client: TestClient, store: Store) -> None:
    body = nector_body()
    headers = {**nector_headers(body, "d-1"), "x-nector-delivery-id": ""}
    assert (await post_nector(client, body, headers))[0] == 400
    assert (await post_nector(client, b"nope", nector_headers(b"nope", "d-2")))[0] == 400
    assert counts(store) == (0, 0)


async def test_redis_down_still_answers_200_with_the_event_recorded(
        client: TestClient, store: Store, enqueue: EnqueueStub,
        caplog: pytest.LogCaptureFixture) -> None:
    enqueue.down = True
    body = toggle_body(570)
    assert (await post_toggle(client, body))[0] == 200
    await settled(client.server.app)
    assert counts(store) == (1, 1)  # the sweep delivers it
    assert "recorded, but queueing its delivery failed" in caplog.text


async def test_the_answer_does_not_wait_for_a_broker_that_hangs(
        start: Any, relay_settings: WebSettings, store: Store) -> None:
    hanging = BlockingEnqueue()
    client = await start(relay_settings, store, hanging)
    try:
        assert (await post_toggle(client, toggle_body(570)))[0] == 200
        assert (await post_toggle(client, toggle_body(571)))[0] == 200
        assert hanging.calls == []  # still hanging, yet both were answered
    finally:
        hanging.release.set()
    await settled(client.server.app)
    assert len(hanging.calls) == 2


async def test_a_database_that_cannot_record_is_503(
        start: Any, relay_settings: WebSettings, enqueue: EnqueueStub) -> None:
    down = Store(make_engine("postgresql+psycopg://pointsync:pw@127.0.0.1:1/pointsync"))
    client = await start(relay_settings, down, enqueue)
    status, answer = await post_toggle(client, toggle_body(570))
    assert status == 503 and answer["error"].startswith("database:")
    assert "pw" not in answer["error"]
    await settled(client.server.app)
    assert enqueue.calls == []


async def test_without_relay_settings_there_are_no_relay_routes(
        start: Any, make_settings: Callable[..., WebSettings], sqlite_url: str,
        store: Store) -> None:
    client = await start(make_settings(DATABASE_URL=sqlite_url), store, None)
    assert (await client.post("/webhooks/toggle", data=b"{}")).status == 404
    assert (await client.post("/webhooks/nector", data=b"{}")).status == 404
