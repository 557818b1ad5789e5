"""A booking round's requests on the Treazure client's aiohttp session (flows/points/batch.py,
systems/treazure/aio.py): the real client and store against a fake Treazure on a real socket.
The booking and its history read leave the client's httpx (which then only fetches the
token), the connections are kept between rounds, and a send keeps its exactly-once rules:
no answer, a timeout or a 5xx leaves it uncertain and never sent again before the history
says; 429 surely booked nothing; 401 takes a new token once."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import httpx
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import event

from worker.base.point_request import validate_request
from worker.base.ratelimit import SharedRateLimiter
from worker.base.settings import Settings
from worker.flows.parts import Parts as FlowParts
from worker.flows.points.batch import book_received
from worker.store.database import Store
from worker.store.history import HistoryStore
from worker.store.ledger import Ledger, LedgerRow
from worker.store.pushguard import PushGuard
from worker.systems.engage.client import EngageClient
from worker.systems.treazure.client import TreazureClient

ACCOUNT = "/api/v1.0/LoyaltyVault/Account/{contact}"
CONTACTS = [f"00000000-0000-4000-8000-0000000000e{k}" for k in range(6)]
SETTLE = 0.3  # short: the second round waits out what is left of it
TOKEN_PATH = "/identity/connect/token"

DROP = "drop"  # booked, then the connection closes with no answer
HANG = "hang"  # booked, then no answer before the client's read timeout


@dataclass
class FakeTreazure:
    """Token, Transaction and History: each booking goes into its account's history;
    `faults` queues what the next bookings of a contact meet instead of a plain 200."""

    url: str = ""
    history: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    faults: dict[str, list[str | int]] = field(default_factory=lambda: defaultdict(list))
    posts: list[str] = field(default_factory=list)  # contacts, one per booking request
    reads: list[str] = field(default_factory=list)
    tokens: int = 0
    peers: set[Any] = field(default_factory=set)  # the client's connections (address, port)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(TOKEN_PATH, self.token)
        app.router.add_post(ACCOUNT + "/Transaction", self.book)
        app.router.add_get(ACCOUNT + "/LoyaltyPrograms/{program}/History", self.read)
        return app

    async def token(self, request: web.Request) -> web.Response:
        self.tokens += 1
        return web.json_response({"access_token": f"tok-{self.tokens}", "expires_in": 3600})

    async def book(self, request: web.Request) -> web.StreamResponse:
        contact = request.match_info["contact"]
        self.posts.append(contact)
        self.peers.add(request.transport.get_extra_info("peername") if request.transport
                       else None)
        body = await request.json()
        fault = self.faults[contact].pop(0) if self.faults[contact] else None
        if fault == 401:
            return web.json_response({"error": "invalid_token"}, status=401)
        if isinstance(fault, int):  # refused before any work
            return web.json_response({"error": "busy"}, status=fault)
        self.history.setdefault(contact, []).append({
            "receiptNr": body["context"]["receiptNr"], "balance": 15.0,
            "dateTime": "2026-11-21T08:00:00+00:00", "amount": 5.0})
        if fault == HANG:  # booked; the answer comes too late
            await self.release.wait()
        if fault == DROP:
            assert request.transport is not None
            request.transport.close()
            raise asyncio.CancelledError
        return web.json_response({"loyaltyPrograms": [
            {"loyaltyPointDefinitionId": "points", "balance": 15.0}]})

    async def read(self, request: web.Request) -> web.Response:
        contact = request.match_info["contact"]
        self.reads.append(contact)
        return web.Response(body=orjson.dumps(self.history.get(contact, [])),
                            content_type="application/json")


class CountingTransport(httpx.AsyncHTTPTransport):
    """The client's own httpx, counting the paths it was asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return await super().handle_async_request(request)


@pytest.fixture
async def fake() -> AsyncIterator[FakeTreazure]:
    server = FakeTreazure()
    async with TestServer(server.app()) as http:
        server.url = str(http.make_url("")).rstrip("/")
        yield server
        server.release.set()


@pytest.fixture
def httpx_calls() -> CountingTransport:
    return CountingTransport()


@pytest.fixture
async def flow(settings: Settings, store: Store, fake: FakeTreazure,
               httpx_calls: CountingTransport) -> AsyncIterator[FlowParts]:
    settings = settings.model_copy(update={
        "TREAZURE_BASE_URL": fake.url, "POINTS_LEASE_SECONDS": 60,
        "POINTS_SETTLE_SECONDS": SETTLE, "POINTS_INLINE_ATTEMPTS": 1,
        "HTTP_TIMEOUT_SECONDS": 0.5})
    redis = fakeredis.FakeAsyncRedis()
    http = httpx.AsyncClient(base_url=fake.url, transport=httpx_calls)
    limiter = SharedRateLimiter(redis, "rate", settings.ENGAGE_RATE_LIMIT)
    async with TreazureClient(settings, redis, http) as treazure, \
            EngageClient(settings, limiter) as engage:
        yield FlowParts(settings, store, redis, treazure, engage,
                        PushGuard(redis, claim_ttl_seconds=60, marker_ttl_seconds=600))
    await redis.aclose()


def recorded(flow: FlowParts, reference: str, contact: str) -> None:
    Ledger(flow.store).record(validate_request(contact, 5, "round test", reference), "webhook")


def row(flow: FlowParts, reference: str) -> LedgerRow:
    found = Ledger(flow.store).get(reference)
    assert found is not None
    return found


def receipts(fake: FakeTreazure, contact: str) -> list[str]:
    return [entry["receiptNr"] for entry in fake.history.get(contact, [])]


async def test_rounds_book_on_the_aiohttp_session_and_keep_its_connections(
    flow: FlowParts, fake: FakeTreazure, httpx_calls: CountingTransport
) -> None:
    for k in range(3):
        recorded(flow, f"evt_{k}", CONTACTS[k])
    first = await book_received(flow)
    for k in range(3, 6):
        recorded(flow, f"evt_{k}", CONTACTS[k])
    second = await book_received(flow)

    assert (first.settled, second.settled) == (3, 3)
    for k in range(6):
        booked = row(flow, f"evt_{k}")
        assert booked.state == "booked" and booked.balance_mutated_us is not None
        assert receipts(fake, CONTACTS[k]) == [f"evt_{k}"]
    assert sorted(fake.posts) == sorted(fake.reads) == sorted(CONTACTS)
    assert httpx_calls.paths == [TOKEN_PATH]  # the client's httpx only fetched the token
    assert len(fake.peers) <= 3  # the second round reused the first round's connections


@pytest.mark.parametrize("fault", [DROP, HANG, 503])
async def test_a_send_without_a_sure_answer_is_uncertain_and_sent_once(
    flow: FlowParts, fake: FakeTreazure, fault: str | int
) -> None:
    recorded(flow, "evt_ok", CONTACTS[0])
    recorded(flow, "evt_unsure", CONTACTS[1])
    fake.faults[CONTACTS[1]].append(fault)

    outcome = await book_received(flow)

    assert (outcome.taken, outcome.settled) == (2, 1)
    assert outcome.retry_in is not None and 0 < outcome.retry_in <= SETTLE
    unsure = row(flow, "evt_unsure")
    assert unsure.state == "received" and unsure.uncertain and unsure.attempts == 1
    assert fake.posts.count(CONTACTS[1]) == 1  # never sent again within the round
    assert row(flow, "evt_ok").state == "booked"

    Ledger(flow.store).defer(["evt_unsure"], -1)  # the pause is over
    fake.release.set()
    later = await book_received(flow)

    assert later.settled == 1
    assert fake.posts.count(CONTACTS[1]) == (1 if fault != 503 else 2)
    assert receipts(fake, CONTACTS[1]) == ["evt_unsure"]  # the history decided; booked once
    assert row(flow, "evt_unsure").state == "booked"


async def test_a_throttled_send_booked_nothing_and_is_not_uncertain(
    flow: FlowParts, fake: FakeTreazure
) -> None:
    recorded(flow, "evt_throttled", CONTACTS[0])
    fake.faults[CONTACTS[0]].append(429)

    outcome = await book_received(flow)

    throttled = row(flow, "evt_throttled")
    assert (outcome.settled, throttled.state, throttled.uncertain) == (0, "received", False)
    assert outcome.retry_in is not None and fake.history == {}


async def test_a_refused_token_is_fetched_again_once_and_the_booking_goes_through(
    flow: FlowParts, fake: FakeTreazure
) -> None:
    recorded(flow, "evt_0", CONTACTS[0])
    fake.faults[CONTACTS[0]].append(401)

    assert (await book_received(flow)).settled == 1

    assert fake.tokens == 2 and fake.posts == [CONTACTS[0], CONTACTS[0]]
    assert receipts(fake, CONTACTS[0]) == ["evt_0"]


async def test_a_round_reads_where_the_histories_end_once_and_stores_them_together(
    flow: FlowParts, fake: FakeTreazure
) -> None:
    for k in range(3):
        recorded(flow, f"evt_{k}", CONTACTS[k])
    recorded(flow, "evt_again", CONTACTS[0])  # a second booking of one contact
    sql: list[str] = []
    event.listen(flow.store.engine, "before_cursor_execute",
                 lambda *args: sql.append(" ".join(args[2].split()).upper()))

    assert (await book_received(flow)).settled == 4

    touching = [s for s in sql if "HISTORY_CONTACTS" in s or "POINTS_HISTORY" in s]
    # One look-up of the stored ends; two writes, as one contact was read twice (each
    # answer's entries are keyed within it) where each booking wrote its own before.
    assert sum(s.startswith("SELECT") for s in touching) == 1
    assert sum(s.startswith("INSERT INTO POINTS_HISTORY") for s in touching) == 2
    history = HistoryStore(flow.store)
    for k in range(1, 3):
        assert [e["receiptNr"] for e in history.page(CONTACTS[k], 0, 10)[0]] == [f"evt_{k}"]
    assert sorted(e["receiptNr"] for e in history.page(CONTACTS[0], 0, 10)[0]) == [
        "evt_0", "evt_again"]
