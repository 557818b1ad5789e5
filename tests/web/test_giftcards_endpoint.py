"""POST /gift-cards and GET /gift-cards/{reference} on the real app (SQLite file, test
server): the apikey, 422 naming the field, the row recorded before the task is queued,
202 then GET, 404, and no full card number in any answer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from kombu.exceptions import OperationalError

from tests.support.web import API_KEY
from worker.base.settings import WebSettings
from worker.faces.web.app import create_app
from worker.faces.web.giftcards import GIFT_ENQUEUE
from worker.store.database import Store
from worker.store.giftcards import Orders

TOGGLE = {"TOGGLE_API_URL": "https://api.mytoggle.test/graphql",
          "TOGGLE_USERNAME": "api-user", "TOGGLE_PASSWORD": "tg-Pa55-9911",
          "TOGGLE_ACCOUNT_ID": "412"}
KEY = {"apikey": API_KEY}
NUMBER = "6301190000000020001"


class GiftEnqueueStub:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.down = False

    def __call__(self, kwargs: dict[str, Any]) -> None:
        if self.down:
            raise OperationalError("Error 111 connecting to 127.0.0.1:6379.")
        self.calls.append(dict(kwargs))


@pytest.fixture
def settings(make_settings: Callable[..., WebSettings], sqlite_url: str) -> WebSettings:
    return make_settings(DATABASE_URL=sqlite_url, **TOGGLE)


@pytest.fixture
def gift_enqueue() -> GiftEnqueueStub:
    return GiftEnqueueStub()


@pytest.fixture
async def start(store: Store, enqueue, gift_enqueue) -> AsyncIterator[Callable[..., Any]]:
    clients: list[TestClient] = []

    async def make(settings: WebSettings) -> TestClient:
        app = create_app(settings, store, enqueue, history_fetcher=_no_history)
        app[GIFT_ENQUEUE] = gift_enqueue
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def _no_history(contact_id: str) -> dict[str, Any]:
    raise AssertionError("no history is fetched here")


@pytest.fixture
async def client(start, settings) -> TestClient:
    return await start(settings)


@pytest.mark.parametrize("headers", [{}, {"apikey": "wrong"}, {"apikey": ""}])
async def test_the_apikey_is_required(client, gift_enqueue, headers) -> None:
    for response in (await client.post("/gift-cards", json={"value": "10"}, headers=headers),
                     await client.get("/gift-cards/any", headers=headers)):
        assert response.status == 401
        assert (await response.json()) == {"error": "apikey: missing or wrong"}
    assert gift_enqueue.calls == []


@pytest.mark.parametrize(("body", "field"), [
    ({"value": "0"}, "value"),
    ({"value": "1.234"}, "value"),
    ({}, "value"),
    ({"value": "10", "email": "nope"}, "email"),
    ({"value": "10", "pin": "1234"}, "pin"),
    ({"value": "10", "message": "x" * 501}, "message"),
    (["10"], "body"),
])
async def test_bad_arguments_are_422_naming_the_field(client, store, gift_enqueue, body,
                                                      field) -> None:
    response = await client.post("/gift-cards", json=body, headers=KEY)
    assert response.status == 422
    assert (await response.json())["error"].startswith(f"{field}:")
    assert gift_enqueue.calls == []
    assert Orders(store).outbox.listing() == []


async def test_a_card_is_recorded_queued_then_followed(client, store, gift_enqueue) -> None:
    response = await client.post("/gift-cards", headers=KEY, json={
        "value": "25.50", "email": "guest@example.com", "reference": "app-1",
        "message": "Happy birthday"})
    assert response.status == 202
    assert await response.json() == {"reference": "app-1", "state": "received"}
    assert gift_enqueue.calls == [{"value": "25.50", "email": "guest@example.com",
                                   "reference": "app-1", "message": "Happy birthday",
                                   "note": None}]
    row = Orders(store).get("app-1")
    assert row is not None and (row.value_minor, row.source) == (2550, "web")

    followed = await client.get("/gift-cards/app-1", headers=KEY)
    assert followed.status == 200
    assert (await followed.json())["state"] == "received"

    # The worker issued it: the answer has the order id and the masked number only.
    Orders(store).issued("app-1", None, order_id=501, line_item_id=9001, card_id=77,
                         card_reference=NUMBER, card_masked="6301 19•• •••• ••• 0001")
    answer = await (await client.get("/gift-cards/app-1", headers=KEY)).json()
    assert (answer["state"], answer["order_id"], answer["card_number"]) == \
        ("issued", 501, "6301 19•• •••• ••• 0001")
    assert NUMBER not in str(answer)

    # The same call again: the same card, nothing queued again.
    again = await client.post("/gift-cards", headers=KEY, json={
        "value": "25.50", "email": "guest@example.com", "reference": "app-1",
        "message": "Happy birthday"})
    assert (again.status, (await again.json())["state"]) == (202, "issued")
    assert len(gift_enqueue.calls) == 1


async def test_a_reference_used_for_another_card_is_refused(client, gift_enqueue) -> None:
    first = await client.post("/gift-cards", headers=KEY,
                              json={"value": "5", "reference": "dup-1"})
    assert first.status == 202
    other = await client.post("/gift-cards", headers=KEY,
                              json={"value": "6", "reference": "dup-1"})
    assert other.status == 409
    assert (await other.json())["error"].startswith("reference:")
    assert len(gift_enqueue.calls) == 1


async def test_without_a_reference_one_is_made_and_answered(client, store) -> None:
    response = await client.post("/gift-cards", headers=KEY, json={"value": 10})
    assert response.status == 202
    reference = (await response.json())["reference"]
    assert reference and Orders(store).get(reference) is not None


async def test_a_broker_down_still_records_the_card(client, store, gift_enqueue) -> None:
    gift_enqueue.down = True
    response = await client.post("/gift-cards", headers=KEY,
                                 json={"value": "5", "reference": "down-1"})
    assert response.status == 202  # recorded: the sweep issues it
    assert Orders(store).get("down-1") is not None


async def test_an_unknown_reference_is_404(client) -> None:
    response = await client.get("/gift-cards/nobody-knows", headers=KEY)
    assert response.status == 404
    assert (await response.json())["error"].startswith("reference:")


async def test_without_toggle_the_endpoint_says_so(start, make_settings, sqlite_url) -> None:
    # Empty is unset (as docker-compose passes them); the store fixture had set them.
    client = await start(make_settings(DATABASE_URL=sqlite_url, TOGGLE_USERNAME="",
                                       TOGGLE_PASSWORD="", TOGGLE_ACCOUNT_ID=""))
    response = await client.post("/gift-cards", headers=KEY, json={"value": "5"})
    assert response.status == 503
