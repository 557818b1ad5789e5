"""GET /contacts/{contact_id}/points-history: the stored history, newest first, behind the
`apikey`; a contact never fetched is fetched on demand (a stub fetcher stands in for Treazure,
except in the last tests, where the real client runs against respx)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from aiohttp.test_utils import TestClient

from tests.support.web import API_KEY, CONTACT, ENV
from worker.base.http import RemoteError
from worker.base.settings import ConfigError, WebSettings
from worker.faces import runtime
from worker.faces.runtime import prepare_store
from worker.faces.web.history import FETCHES
from worker.flows.history import UnknownContact
from worker.store.database import Store
from worker.store.history import HistoryStore

OTHER = "0f0e0d0c-0b0a-4908-8706-050403020100"
AUTH = {"apikey": API_KEY}
PATH = f"/contacts/{CONTACT}/points-history"
TREAZURE = ENV["TREAZURE_BASE_URL"]
HISTORY_URL = (f"{TREAZURE}/api/v1.0/LoyaltyVault/Account/{CONTACT}"
               f"/LoyaltyPrograms/points/History")


def entry(day: int, amount: float, balance: float, kind: str = "Load") -> dict[str, Any]:
    """A Treazure history entry shaped like contract §3."""
    return {"dateTime": f"2026-11-{day:02d}T09:14:03Z", "amount": amount,
            "transactionType": kind, "expiresAt": None, "balance": balance,
            "comment": f"day {day}", "operatorId": "engage", "shopId": None, "posId": None,
            "receiptNr": f"pts-{day:04d}", "properties": {"day": day}}


# Oldest first, as Treazure sends it.
ENTRIES = [entry(1, 100, 100), entry(2, 25.5, 125.5), entry(3, -20, 105.5, "Redeem"),
           entry(4, 10, 115.5), entry(5, -5.5, 110, "Expire")]
NEWEST_FIRST = ENTRIES[::-1]


class Fetcher:
    """Stands in for Treazure + history.fetch_history: stores `entries` for the contact,
    or raises `error`; with `gate`, waits for it first."""

    def __init__(self, store: Store, entries: list[dict[str, Any]] | None = None) -> None:
        self.history = HistoryStore(store)
        self.entries = ENTRIES if entries is None else entries
        self.calls: list[str] = []
        self.error: Exception | None = None
        self.gate: asyncio.Event | None = None

    async def __call__(self, contact_id: str) -> dict[str, Any]:
        self.calls.append(contact_id)
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        added = self.history.save(contact_id, self.entries)
        return {"contact_id": contact_id, "received": len(self.entries), "added": added,
                "incremental": False}


@pytest.fixture
def fetcher(store: Store) -> Fetcher:
    return Fetcher(store)


@pytest.fixture
def start(serve: Callable[..., Any]) -> Callable[..., Any]:
    """Serve an app with the history fetcher given (None: the real Treazure one)."""

    async def start(settings: WebSettings, store: Store, fetcher: Any,
                    **options: Any) -> TestClient:
        return await serve(settings, store, lambda kwargs: None, history_fetcher=fetcher,
                           **options)

    return start


@pytest.fixture
async def client(start: Callable[..., Any], settings: WebSettings, store: Store,
                 fetcher: Fetcher) -> TestClient:
    return await start(settings, store, fetcher)


async def get(client: TestClient, query: str = "", *, path: str = PATH,
              headers: dict[str, str] | None = None) -> tuple[int, Any]:
    response = await client.get(f"{path}{query}", headers=AUTH if headers is None else headers)
    return response.status, await response.json()


# -- paging -----------------------------------------------------------------------------------


async def test_answers_the_stored_history_newest_first_as_received(
    client: TestClient, store: Store, fetcher: Fetcher
) -> None:
    HistoryStore(store).save(CONTACT, ENTRIES)
    HistoryStore(store).save(OTHER, [entry(6, 1, 1)])  # another contact's: not shown

    status, answer = await get(client)

    assert status == 200
    assert answer == {"items": NEWEST_FIRST, "totalCount": 5, "offset": 0, "count": 5}
    assert list(answer) == ["items", "totalCount", "offset", "count"]  # Engage's order
    assert fetcher.calls == []  # stored already: Treazure is not asked


@pytest.mark.parametrize(("query", "days", "offset"), [
    ("?offset=1&count=2", [4, 3], 1),
    ("?count=1", [5], 0),
    ("?offset=3", [2, 1], 3),
    ("?offset=4&count=10", [1], 4),  # count beyond the end: what there is
    ("?offset=5", [], 5),  # offset at the end: nothing, the total still told
    ("?offset=999999999999999999&count=1000", [], 999999999999999999),
    ("?offset=&count=", [5, 4, 3, 2, 1], 0),  # left empty: the defaults
])
async def test_pages_by_offset_and_count(
    client: TestClient, store: Store, query: str, days: list[int], offset: int
) -> None:
    HistoryStore(store).save(CONTACT, ENTRIES)

    status, answer = await get(client, query)

    assert status == 200, answer
    assert [item["properties"]["day"] for item in answer["items"]] == days
    assert (answer["totalCount"], answer["offset"], answer["count"]) == (5, offset, len(days))


async def test_default_count_is_100_and_count_may_be_1000(
    client: TestClient, store: Store
) -> None:
    many = [{"dateTime": f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}Z", "amount": 1,
             "transactionType": "Load", "balance": i + 1, "receiptNr": f"r-{i}"}
            for i in range(1200)]
    HistoryStore(store).save(CONTACT, many)

    status, answer = await get(client)
    assert status == 200
    assert (answer["count"], answer["totalCount"]) == (100, 1200)
    assert answer["items"][0]["receiptNr"] == "r-1199"

    status, answer = await get(client, "?count=1000&offset=1100")
    assert status == 200
    assert answer["count"] == 100
    assert [i["receiptNr"] for i in answer["items"][:2]] == ["r-99", "r-98"]


# -- apikey -----------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [
    {},
    {"apikey": ""},
    {"apikey": "wrong"},
    {"apikey": API_KEY[:-1]},
    {"apikey": API_KEY + "x"},
    {"apikey": API_KEY.upper()},
    {"apikey": "ключ"},  # not ASCII: still a plain 401, not a server error
    {"Authorization": f"Bearer {API_KEY}"},  # the key, but not where it belongs
], ids=["none", "empty", "wrong", "prefix", "longer", "case", "non-ascii", "bearer"])
async def test_missing_or_wrong_apikey_is_401_and_nothing_is_read_or_fetched(
    client: TestClient, store: Store, fetcher: Fetcher, caplog: pytest.LogCaptureFixture,
    headers: dict[str, str],
) -> None:
    HistoryStore(store).save(CONTACT, ENTRIES)
    caplog.set_level(logging.DEBUG)

    response = await client.get(f"/contacts/{OTHER}/points-history", headers=headers)
    text = await response.text()

    assert response.status == 401
    assert await response.json() == {"error": "apikey: missing or wrong"}
    assert API_KEY not in text and API_KEY not in caplog.text
    assert "day 1" not in text
    assert fetcher.calls == []  # a never-fetched contact: Treazure still not asked


async def test_apikey_is_checked_before_the_arguments(client: TestClient) -> None:
    status, answer = await get(client, "?count=0", path="/contacts/nope/points-history",
                               headers={"apikey": "wrong"})
    assert (status, answer) == (401, {"error": "apikey: missing or wrong"})


def test_an_empty_configured_key_stops_the_web_process_at_start(
    make_settings: Callable[..., WebSettings],
) -> None:
    # Empty, every read request would be refused; the process refuses to start instead,
    # naming the variable (never its value).
    with pytest.raises(ConfigError, match=r"WEB_API_KEY is malformed: .*must not be empty"):
        make_settings(WEB_API_KEY="  ")


# -- arguments --------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "query", "error"), [
    ("/contacts/not-a-guid/points-history", "", "contact_id: must be a GUID"),
    ("/contacts/6c1e2f4a0b1c4d2e9f001a2b3c4d5e6f/points-history", "",
     "contact_id: must be a GUID"),
    (PATH, "?offset=-1", "offset: must be a whole number ≥ 0"),
    (PATH, "?offset=1.5", "offset: must be a whole number ≥ 0"),
    (PATH, "?offset=abc", "offset: must be a whole number ≥ 0"),
    (PATH, "?offset=1" + "0" * 18, "offset: must be a whole number ≥ 0"),
    (PATH, "?count=0", "count: must be a whole number from 1 to 1000, got '0'"),
    (PATH, "?count=1001", "count: must be a whole number from 1 to 1000, got '1001'"),
    (PATH, "?count=-5", "count: must be a whole number from 1 to 1000"),
    (PATH, "?count=%EF%BC%95", "count: must be a whole number from 1 to 1000"),  # fullwidth 5
    (PATH, "?count=+5", "count: must be a whole number from 1 to 1000"),
])
async def test_bad_arguments_are_400_naming_the_argument(
    client: TestClient, store: Store, fetcher: Fetcher, path: str, query: str, error: str
) -> None:
    status, answer = await get(client, query, path=path)

    assert status == 400
    assert answer["error"].startswith(error), answer
    assert fetcher.calls == []
    assert HistoryStore(store).fetched(CONTACT) is None


# -- fetched on demand ------------------------------------------------------------------------


async def test_a_contact_never_fetched_is_fetched_once_then_served_from_the_store(
    client: TestClient, store: Store, fetcher: Fetcher
) -> None:
    status, answer = await get(client, "?count=2")

    assert status == 200
    assert answer == {"items": NEWEST_FIRST[:2], "totalCount": 5, "offset": 0, "count": 2}
    assert fetcher.calls == [CONTACT]
    assert HistoryStore(store).fetched(CONTACT) is not None

    status, answer = await get(client, "?offset=2")
    assert (status, answer["items"]) == (200, NEWEST_FIRST[2:])
    assert fetcher.calls == [CONTACT]  # not again


async def test_a_contact_with_no_history_is_fetched_once_and_answers_empty(
    start: Callable[..., Any], settings: WebSettings, store: Store
) -> None:
    fetcher = Fetcher(store, entries=[])
    client = await start(settings, store, fetcher)

    for _ in range(2):
        status, answer = await get(client)
        assert (status, answer) == (200, {"items": [], "totalCount": 0, "offset": 0,
                                          "count": 0})
    assert fetcher.calls == [CONTACT]


async def test_an_unknown_contact_is_404(
    client: TestClient, store: Store, fetcher: Fetcher
) -> None:
    fetcher.error = UnknownContact(f"contact_id: Treazure has no account {CONTACT}")

    status, answer = await get(client)

    assert (status, answer) == (404, {"error": "contact_id: unknown contact"})
    assert fetcher.calls == [CONTACT]
    assert HistoryStore(store).fetched(CONTACT) is None


async def test_treazure_failing_is_502_without_secrets(
    client: TestClient, store: Store, fetcher: Fetcher, caplog: pytest.LogCaptureFixture
) -> None:
    secret = ENV["TREAZURE_CLIENT_SECRET"]
    fetcher.error = RemoteError("treazure", f"HTTP 503: bad gateway (client_secret={secret})",
                                status=503)
    caplog.set_level(logging.DEBUG)

    status, answer = await get(client)

    assert status == 502
    assert answer["error"].startswith("Treazure: HTTP 503: bad gateway")
    assert secret not in answer["error"] and secret not in caplog.text
    assert API_KEY not in caplog.text
    assert HistoryStore(store).fetched(CONTACT) is None

    fetcher.error = None  # Treazure is back: the next request fetches again
    status, answer = await get(client)
    assert (status, answer["totalCount"]) == (200, 5)
    assert fetcher.calls == [CONTACT, CONTACT]


async def test_a_slow_fetch_is_504_shared_by_requests_and_finishes_in_the_background(
    start: Callable[..., Any], settings: WebSettings, store: Store, fetcher: Fetcher
) -> None:
    fetcher.gate = asyncio.Event()
    client = await start(settings, store, fetcher, fetch_timeout=0.1)

    first = await get(client)
    second = await get(client)  # while the first fetch is still under way

    for status, answer in (first, second):
        assert status == 504
        assert answer["error"].startswith("Treazure: no answer within 0.1 s")
    assert fetcher.calls == [CONTACT]  # the second request joined the first one's fetch

    (task,) = client.server.app[FETCHES].values()
    fetcher.gate.set()
    await task
    status, answer = await get(client)
    assert (status, answer["items"]) == (200, NEWEST_FIRST)
    assert fetcher.calls == [CONTACT]


async def test_on_postgresql(
    start: Callable[..., Any], make_settings: Callable[..., WebSettings], postgres_url: str
) -> None:
    store = prepare_store(postgres_url)
    try:
        HistoryStore(store).save(CONTACT, ENTRIES)
        fetcher = Fetcher(store, entries=ENTRIES[:2])
        client = await start(make_settings(DATABASE_URL=postgres_url), store, fetcher)

        status, answer = await get(client, "?offset=1&count=3")
        assert (status, answer) == (200, {"items": NEWEST_FIRST[1:4], "totalCount": 5,
                                          "offset": 1, "count": 3})

        status, answer = await get(client, path=f"/contacts/{OTHER}/points-history")
        assert (status, answer["items"], answer["totalCount"]) == \
            (200, ENTRIES[:2][::-1], 2)
        assert fetcher.calls == [OTHER]
    finally:
        store.engine.dispose()
        runtime._stores.pop(postgres_url, None)


# -- the real Treazure client (respx answers its HTTP) ----------------------------------------


@pytest.fixture
def treazure() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=TREAZURE, assert_all_called=False) as router:
        router.post("/identity/connect/token").respond(
            200, json={"access_token": "tok-history-test", "token_type": "Bearer",
                       "expires_in": 3600})
        yield router


async def test_without_an_injected_fetcher_treazure_is_asked_and_the_app_store_keeps_it(
    start: Callable[..., Any], settings: WebSettings, store: Store,
    treazure: respx.MockRouter, tmp_path: Path,
) -> None:
    history = treazure.get(HISTORY_URL).respond(200, json=ENTRIES[:3])
    own_url = f"sqlite:///{tmp_path / 'own.db'}"  # the app's store, not DATABASE_URL's
    own = prepare_store(own_url)
    try:
        client = await start(settings, own, None)

        status, answer = await get(client)

        assert (status, answer) == (200, {"items": ENTRIES[:3][::-1], "totalCount": 3,
                                          "offset": 0, "count": 3})
        assert history.call_count == 1
        assert history.calls.last.request.headers["Authorization"] == "Bearer tok-history-test"
        assert HistoryStore(own).page(CONTACT, 0, 10)[1] == 3
        assert HistoryStore(store).fetched(CONTACT) is None
        await get(client)
        assert history.call_count == 1
    finally:
        own.engine.dispose()
        runtime._stores.pop(own_url, None)


async def test_without_an_injected_fetcher_a_treazure_404_is_404(
    start: Callable[..., Any], settings: WebSettings, store: Store,
    treazure: respx.MockRouter,
) -> None:
    treazure.get(HISTORY_URL).mock(return_value=httpx.Response(404, json={"error": "nf"}))
    client = await start(settings, store, None)

    status, answer = await get(client)

    assert (status, answer) == (404, {"error": "contact_id: unknown contact"})
