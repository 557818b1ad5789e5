"""Flow 3, points history: the real Treazure client and store against a fake Treazure on a
real socket (an aiohttp server answering the token and History calls the way Treazure does,
`from=` included). One contact is read on the client's httpx, a refresh's chunk on one
aiohttp session: both are tested here against the same fake."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import fakeredis
import orjson
import pytest
from aiohttp import web
from sqlalchemy import event

from worker.base.http import RESPONSES, Rejected, Retryable
from worker.base.money import utc_micros
from worker.base.point_request import InvalidArgument
from worker.base.ratelimit import SharedRateLimiter
from worker.base.settings import Settings
from worker.flows import history
from worker.flows.parts import Parts as FlowParts
from worker.store.database import Store
from worker.store.history import HistoryStore, MalformedHistory
from worker.store.pushguard import PushGuard
from worker.systems.engage.client import EngageClient
from worker.systems.treazure.client import TreazureClient
from worker.systems.treazure.history import env_proxy

A, B, C, D = (f"00000000-0000-4000-8000-00000000000{i}" for i in (1, 2, 3, 4))
UNKNOWN = "00000000-0000-4000-8000-0000000000ff"
HISTORY_PATH = "/api/v1.0/LoyaltyVault/Account/{contact}/LoyaltyPrograms/{program}/History"


def entry(at: str, amount: float, balance: float, receipt: str | None = None) -> dict[str, Any]:
    return {"dateTime": at, "amount": amount,
            "transactionType": "Load" if amount >= 0 else "Redeem", "expiresAt": None,
            "balance": balance, "comment": "flow test", "operatorId": "pointsync",
            "shopId": None, "posId": None, "receiptNr": receipt, "properties": {}}


def us(text: str) -> int:
    return utc_micros(datetime.fromisoformat(text))


@dataclass(frozen=True)
class Answer:
    """A queued answer for one History request: a status, body and headers, or (drop)
    the connection closed in the middle of the answer."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False


def answer(status: int, text: str = "", json: Any = None, **headers: str) -> Answer:
    body = orjson.dumps(json) if json is not None else text.encode()
    kind = {"Content-Type": "application/json"} if json is not None else {}
    return Answer(status, body, {**kind, **{k.replace("_", "-"): v for k, v in headers.items()}})


DROP = Answer(drop=True)


@dataclass
class FakeHistory:
    """Treazure's token and History endpoints: each account's entries oldest first, `from=`
    honoured (at or after), queued answers per account for faults, and an optional gate
    that holds every request until released (to count requests in flight)."""

    url: str = ""  # where it listens, once started
    entries: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    faults: dict[str, list[Answer]] = field(default_factory=lambda: defaultdict(list))
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (contact, from)
    programs: list[str] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)
    tokens: int = 0  # token requests
    gate: asyncio.Event | None = None
    in_flight: int = 0
    peak: int = 0
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    reach_at: int = 0  # `reached` is set once this many requests are in flight

    def add(self, contact: str, *items: dict[str, Any]) -> None:
        self.entries.setdefault(contact, []).extend(items)

    def fail(self, contact: str, *answers: Answer) -> None:
        self.faults[contact].extend(answers)

    def froms(self, contact: str) -> list[str | None]:
        return [since for who, since in self.requests if who == contact]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/identity/connect/token", self.token)
        app.router.add_get(HISTORY_PATH, self.history)
        return app

    async def token(self, request: web.Request) -> web.Response:
        self.tokens += 1
        return web.json_response({"access_token": "tok", "token_type": "Bearer",
                                  "expires_in": 3600})

    async def history(self, request: web.Request) -> web.StreamResponse:
        contact, program = request.match_info["contact"], request.match_info["program"]
        since = request.query.get("from")
        self.requests.append((contact, since))
        self.programs.append(program)
        self.auth.append(request.headers.get("Authorization", ""))
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if self.reach_at and self.in_flight >= self.reach_at:
                self.reached.set()
            if self.gate is not None:
                await self.gate.wait()
            if self.faults.get(contact):
                fault = self.faults[contact].pop(0)
                if fault.drop:
                    await self.drop(request)
                return web.Response(status=fault.status, body=fault.body,
                                    headers=fault.headers)
            if contact not in self.entries:
                return web.json_response({"error": "AccountNotFound"}, status=404)
            rows = [e for e in self.entries[contact]
                    if since is None or us(e["dateTime"]) >= us(since)]
            return web.Response(body=orjson.dumps(rows), content_type="application/json")
        finally:
            self.in_flight -= 1


    @staticmethod
    async def drop(request: web.Request) -> None:
        """The answer's head and a piece of its body, then the connection closes: the
        client has an answer it cannot finish (a connection closed before any answer would
        be retried by aiohttp itself once, on a kept-alive connection)."""
        response = web.StreamResponse(headers={"Content-Type": "application/json",
                                               "Content-Length": "100"})
        await response.prepare(request)
        await response.write(b'[{"dateTime": ')
        assert request.transport is not None
        request.transport.close()
        raise asyncio.CancelledError  # nothing more is written


@pytest.fixture
async def treazure_history() -> AsyncIterator[FakeHistory]:
    fake = FakeHistory()
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fake.url = f"http://127.0.0.1:{port}"
    yield fake
    await runner.cleanup()


@pytest.fixture
async def flow(settings: Settings, store: Store, treazure_history: FakeHistory
               ) -> AsyncIterator[FlowParts]:
    """The Parts a task hands to the history flow, its Treazure the fake above."""
    settings = settings.model_copy(update={"TREAZURE_BASE_URL": treazure_history.url})
    redis = fakeredis.FakeAsyncRedis()
    guard = PushGuard(redis, claim_ttl_seconds=60, marker_ttl_seconds=600)
    limiter = SharedRateLimiter(redis, "rate", settings.ENGAGE_RATE_LIMIT)
    async with TreazureClient(settings, redis) as treazure, \
            EngageClient(settings, limiter) as engage:
        yield FlowParts(settings, store, redis, treazure, engage, guard)
    await redis.aclose()


def with_settings(flow: FlowParts, **changes: Any) -> FlowParts:
    settings: Settings = flow.settings.model_copy(update=changes)
    return FlowParts(settings, flow.store, flow.redis, flow.treazure, flow.engage, flow.guard)


def stored(flow: FlowParts, contact: str) -> list[dict[str, Any]]:
    """The contact's stored entries, oldest first."""
    entries, count = HistoryStore(flow.store).page(contact, 0, 1000)
    assert len(entries) == count
    return list(reversed(entries))


H1 = entry("2026-11-21T08:00:00Z", 100, 100)
H2 = entry("2026-11-21T09:14:03Z", 25, 125, "pts-1")
H3 = entry("2026-11-21T10:30:00Z", -5, 120, "pts-2")
H4 = entry("2026-11-21T11:00:00Z", 10, 130, "pts-3")


# -- one contact --------------------------------------------------------------------------


async def test_first_fetch_reads_everything_without_from(
    flow: FlowParts, treazure_history: FakeHistory
) -> None:
    treazure_history.add(A, H1, H2)
    result = await history.fetch_history(flow, A)
    assert result == {"contact_id": A, "received": 2, "added": 2, "incremental": False}
    assert treazure_history.requests == [(A, None)]
    assert treazure_history.programs == ["points"]  # TREAZURE_LOYALTY_ID
    assert treazure_history.auth == ["Bearer tok"]
    assert stored(flow, A) == [H1, H2]


async def test_the_next_fetch_starts_from_the_newest_stored_entry_and_adds_only_new_ones(
    flow: FlowParts, treazure_history: FakeHistory
) -> None:
    treazure_history.add(A, H1, H2)
    await history.fetch_history(flow, A)
    treazure_history.add(A, H3, H4)
    result = await history.fetch_history(flow, A)
    assert treazure_history.froms(A) == [None, H2["dateTime"]]
    # Treazure answers from H2 on (at or after): H2 again, which is not stored twice.
    assert result == {"contact_id": A, "received": 3, "added": 2, "incremental": True}
    assert stored(flow, A) == [H1, H2, H3, H4]
    again = await history.fetch_history(flow, A)
    assert treazure_history.froms(A)[-1] == H4["dateTime"]
    assert again == {"contact_id": A, "received": 1, "added": 0, "incremental": True}
    assert stored(flow, A) == [H1, H2, H3, H4]


async def test_from_never_lies_after_the_newest_stored_entry(
    flow: FlowParts, treazure_history: FakeHistory
) -> None:
    """An entry time with a fraction of a second: `from=` may round down (an entry read
    twice is skipped by the store), never up (an entry would be lost)."""
    first = entry("2026-11-21T09:14:03.750Z", 25, 125, "pts-frac")
    same_second = entry("2026-11-21T09:14:03.900Z", 1, 126, "pts-later")
    treazure_history.add(A, first)
    await history.fetch_history(flow, A)
    treazure_history.add(A, same_second)
    result = await history.fetch_history(flow, A)
    (_, since) = treazure_history.requests[-1]
    assert since is not None and us(since) <= us(first["dateTime"])
    assert result["added"] == 1
    assert stored(flow, A) == [first, same_second]


async def test_an_empty_history_is_fetched_whole_again_next_time(
    flow: FlowParts, treazure_history: FakeHistory
) -> None:
    treazure_history.add(A)
    assert (await history.fetch_history(flow, A))["added"] == 0
    treazure_history.add(A, H1)
    result = await history.fetch_history(flow, A)
    assert treazure_history.froms(A) == [None, None]
    assert result["incremental"] is False and result["added"] == 1


async def test_an_unknown_account_is_unknown_contact_and_stores_nothing(
    flow: FlowParts, treazure_history: FakeHistory
) -> None:
    with pytest.raises(history.UnknownContact):
        await history.fetch_history(flow, UNKNOWN)
    assert len(treazure_history.requests) == 1  # a 404 is not retried
    assert HistoryStore(flow.store).fetched(UNKNOWN) is None


async def test_an_invalid_contact_id_is_refused_before_any_request(
    flow: FlowParts, treazure_history: FakeHistory
) -> None:
    with pytest.raises(InvalidArgument, match="contact_id"):
        await history.fetch_history(flow, "../Balances/Get")
    assert treazure_history.requests == []


# -- a chunk: the same reads on one aiohttp session, one store read and one write -------


async def test_a_chunk_reads_each_history_from_where_the_store_ends(
    flow: FlowParts, treazure_history: FakeHistory
) -> None:
    """Never fetched: no from=; fetched with entries: from its newest, rounded down to the
    second (never after it); fetched empty: no from= again."""
    first = entry("2026-11-21T09:14:03.750Z", 25, 125, "pts-frac")
    same_second = entry("2026-11-21T09:14:03.900Z", 1, 126, "pts-later")
    treazure_history.add(A, H1, first)
    treazure_history.add(B)
    assert await history.fetch_many(flow, [A, B], 8) == \
        {"contacts": 2, "added": 2, "unknown": 0, "failed": 0}
    treazure_history.add(A, same_second)
    treazure_history.add(B, H1)
    treazure_history.add(C, H2)
    assert await history.fetch_many(flow, [A, B, C], 8) == \
        {"contacts": 3, "added": 3, "unknown": 0, "failed": 0}
    assert treazure_history.froms(A) == [None, "2026-11-21T09:14:03Z"]
    assert treazure_history.froms(B) == [None, None]
    assert treazure_history.froms(C) == [None]
    assert treazure_history.programs == ["points"] * 5
    assert set(treazure_history.auth) == {"Bearer tok"}
    assert stored(flow, A) == [H1, first, same_second]
    assert stored(flow, B) == [H1] and stored(flow, C) == [H2]


async def test_a_chunk_keeps_two_identical_entries_and_adds_nothing_on_a_second_pass(
    flow: FlowParts, treazure_history: FakeHistory
) -> None:
    twice = entry("2026-11-21T09:14:03Z", 5, 105, None)
    treazure_history.add(A, H1, twice, twice)
    treazure_history.add(B, H1)
    assert (await history.fetch_many(flow, [A, B], 8))["added"] == 4
    assert (await history.fetch_many(flow, [A, B], 8))["added"] == 0
    assert stored(flow, A) == [H1, twice, twice] and stored(flow, B) == [H1]


class Statements:
    """The SQL a store engine runs, and its commits."""

    def __init__(self, store: Store) -> None:
        self.sql: list[str] = []
        self.commits = 0
        event.listen(store.engine, "before_cursor_execute", self._statement)
        event.listen(store.engine, "commit", self._commit)

    def _statement(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.sql.append(" ".join(statement.split()).upper())

    def _commit(self, conn: Any) -> None:
        self.commits += 1

    def count(self, start: str) -> int:
        return sum(s.startswith(start) for s in self.sql)


async def test_a_chunk_reads_the_store_once_and_writes_once(
    flow: FlowParts, treazure_history: FakeHistory
) -> None:
    contacts = [f"00000000-0000-4000-8000-{k:012d}" for k in range(40)]
    for k, contact in enumerate(contacts):
        treazure_history.add(contact, entry("2026-11-21T08:00:00Z", k + 1, k + 1), H2)
    sql = Statements(flow.store)
    counts = await history.fetch_many(flow, [*contacts, UNKNOWN, "not-a-guid"], 8)
    assert counts == {"contacts": 42, "added": 80, "unknown": 1, "failed": 1}
    assert sql.count("SELECT") == 1 and "HISTORY_CONTACTS" in sql.sql[0]
    assert sql.count("INSERT INTO POINTS_HISTORY") == 1
    assert sql.count("INSERT INTO HISTORY_CONTACTS") == 1
    assert sql.commits == 1
    assert all(len(stored(flow, c)) == 2 for c in contacts)


async def test_a_chunk_with_many_entries_waiting_writes_them_before_its_end(
    flow: FlowParts, treazure_history: FakeHistory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history, "WRITE_AT_ENTRIES", 4)
    contacts = [f"00000000-0000-4000-8000-{k:012d}" for k in range(5)]
    for contact in contacts:
        treazure_history.add(contact, H1, H2)
    sql = Statements(flow.store)
    assert (await history.fetch_many(flow, contacts, 3))["added"] == 10
    assert sql.commits == 3  # at 4 entries, at 8, and the last 2 at the end
    assert all(stored(flow, c) == [H1, H2] for c in contacts)


async def test_a_chunk_past_its_time_starts_no_more_and_stores_what_it_fetched(
    flow: FlowParts, treazure_history: FakeHistory
) -> None:
    contacts = [f"00000000-0000-4000-8000-{k:012d}" for k in range(20)]
    for contact in contacts:
        treazure_history.add(contact, H1)
    counts, rest = await history.fetch_for_a_while(flow, contacts, 2, seconds=0)
    # The first 4 × `concurrency` contacts always start, so every turn makes progress.
    assert counts == {"contacts": 8, "added": 8, "unknown": 0, "failed": 0}
    assert rest == contacts[8:]
    assert [len(stored(flow, c)) for c in contacts] == [1] * 8 + [0] * 12
    counts, rest = await history.fetch_for_a_while(flow, rest, 2, seconds=60)
    assert counts["added"] == 12 and rest == []


async def test_a_chunk_that_fails_to_write_leaves_the_store_as_it_was(
    flow: FlowParts, treazure_history: FakeHistory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing is half-stored: the next refresh reads the same entries again (no from=)."""
    treazure_history.add(A, H1)
    treazure_history.add(B, H2)

    def broken(self: HistoryStore, received: Any) -> dict[str, int]:
        raise RuntimeError("database gone")

    with monkeypatch.context() as patched:
        patched.setattr(HistoryStore, "save_many", broken)
        with pytest.raises(RuntimeError, match="database gone"):
            await history.fetch_many(flow, [A, B], 8)
    assert HistoryStore(flow.store).newest_times([A, B]) == {}
    assert (await history.fetch_many(flow, [A, B], 8))["added"] == 2
    assert treazure_history.froms(A) == [None, None]


# -- errors: the rules of every Treazure read, one contact and in a chunk -----------------

TRANSIENT = [
    answer(503, "<html>down</html>"),
    answer(500, json={"error": "boom"}),
    answer(502, "bad gateway"),
    answer(504, "timeout"),
    answer(429, Retry_After="0"),
    answer(429),
    answer(200, "<html>a proxy page</html>"),  # garbled success
    DROP,  # the connection closed in the middle of the answer
]
TRANSIENT_IDS = ["503-html", "500", "502", "504", "429-retry-after", "429", "garbled-200",
                 "dropped"]


@pytest.mark.parametrize("first", TRANSIENT, ids=TRANSIENT_IDS)
async def test_a_transient_failure_is_retried_and_the_history_arrives(
    flow: FlowParts, treazure_history: FakeHistory, first: Answer
) -> None:
    treazure_history.add(A, H1, H2)
    treazure_history.fail(A, first)
    result = await history.fetch_history(flow, A)
    assert len(treazure_history.requests) == 2
    assert result["added"] == 2 and stored(flow, A) == [H1, H2]


@pytest.mark.parametrize("first", TRANSIENT, ids=TRANSIENT_IDS)
async def test_a_transient_failure_in_a_chunk_is_retried_and_the_history_arrives(
    flow: FlowParts, treazure_history: FakeHistory, first: Answer
) -> None:
    treazure_history.add(A, H1, H2)
    treazure_history.add(B, H3)
    treazure_history.fail(A, first)
    counts = await history.fetch_many(flow, [A, B], 8)
    assert counts == {"contacts": 2, "added": 3, "unknown": 0, "failed": 0}
    assert treazure_history.froms(A) == [None, None]
    assert stored(flow, A) == [H1, H2] and stored(flow, B) == [H3]


async def test_a_chunks_answers_are_counted_for_the_metrics(
    flow: FlowParts, treazure_history: FakeHistory
) -> None:
    before = RESPONSES.copy()
    treazure_history.add(A, H1)
    treazure_history.fail(A, DROP, answer(503))
    assert (await history.fetch_many(flow, [A, UNKNOWN], 8))["added"] == 1
    counted = RESPONSES - before
    # The token's 200 too (the first request fetches it).
    assert counted == {("treazure", "dropped"): 1, ("treazure", "503"): 1,
                       ("treazure", "200"): 2, ("treazure", "404"): 1}


async def test_a_failure_that_lasts_gives_up_after_the_attempts_and_stores_nothing(
    flow: FlowParts, treazure_history: FakeHistory
) -> None:
    attempts = flow.settings.HTTP_MAX_ATTEMPTS
    treazure_history.add(A, H1)
    treazure_history.fail(A, *(answer(503) for _ in range(attempts)))
    with pytest.raises(Retryable, match="HTTP 503"):
        await history.fetch_history(flow, A)
    assert len(treazure_history.requests) == attempts
    assert HistoryStore(flow.store).fetched(A) is None
    assert (await history.fetch_history(flow, A))["added"] == 1  # next time it works


async def test_a_failure_that_lasts_in_a_chunk_is_counted_and_the_others_are_stored(
    flow: FlowParts, treazure_history: FakeHistory, caplog: pytest.LogCaptureFixture
) -> None:
    attempts = flow.settings.HTTP_MAX_ATTEMPTS
    treazure_history.add(A, H1)
    treazure_history.add(B, H2)
    treazure_history.fail(A, *(DROP for _ in range(attempts)))
    counts = await history.fetch_many(flow, [A, B], 8)
    assert counts == {"contacts": 2, "added": 1, "unknown": 0, "failed": 1}
    assert treazure_history.froms(A) == [None] * attempts
    assert HistoryStore(flow.store).fetched(A) is None and stored(flow, B) == [H2]
    assert f"history of {A} not fetched: treazure: no answer" in caplog.text
    assert (await history.fetch_many(flow, [A], 8))["added"] == 1  # next time it works


async def test_a_refusal_is_not_retried(flow: FlowParts, treazure_history: FakeHistory) -> None:
    treazure_history.add(A, H1)
    treazure_history.fail(A, answer(400, json={"error": "BadRequest"}))
    with pytest.raises(Rejected, match="HTTP 400") as raised:
        await history.fetch_history(flow, A)
    assert raised.value.status == 400
    assert len(treazure_history.requests) == 1


async def test_a_refusal_in_a_chunk_is_not_retried_and_counted_failed(
    flow: FlowParts, treazure_history: FakeHistory, caplog: pytest.LogCaptureFixture
) -> None:
    treazure_history.add(A, H1)
    treazure_history.fail(A, answer(400, json={"error": "BadRequest"}))
    assert await history.fetch_many(flow, [A], 8) == \
        {"contacts": 1, "added": 0, "unknown": 0, "failed": 1}
    assert len(treazure_history.requests) == 1
    assert "HTTP 400: BadRequest" in caplog.text


async def test_an_unknown_account_in_a_chunk_is_counted_unknown_and_not_retried(
    flow: FlowParts, treazure_history: FakeHistory
) -> None:
    assert await history.fetch_many(flow, [UNKNOWN], 8) == \
        {"contacts": 1, "added": 0, "unknown": 1, "failed": 0}
    assert len(treazure_history.requests) == 1
    assert HistoryStore(flow.store).fetched(UNKNOWN) is None


@pytest.mark.parametrize("how", ["one", "chunk"])
async def test_an_expired_token_is_replaced_once(
    flow: FlowParts, treazure_history: FakeHistory, how: str
) -> None:
    treazure_history.add(A, H1)
    treazure_history.fail(A, answer(401, json={"error": "invalid_token"}))
    if how == "one":
        assert (await history.fetch_history(flow, A))["added"] == 1
    else:
        assert (await history.fetch_many(flow, [A], 8))["added"] == 1
    assert len(treazure_history.requests) == 2 and treazure_history.tokens == 2
    assert treazure_history.auth[0] == treazure_history.auth[1] == "Bearer tok"


async def test_a_token_refused_twice_in_a_chunk_is_a_failure_not_a_loop(
    flow: FlowParts, treazure_history: FakeHistory
) -> None:
    treazure_history.add(A, H1)
    treazure_history.fail(A, *(answer(401, json={"error": "invalid_token"}) for _ in range(2)))
    assert (await history.fetch_many(flow, [A], 8))["failed"] == 1
    assert len(treazure_history.requests) == 2 and treazure_history.tokens == 2


@pytest.mark.parametrize("how", ["one", "chunk"])
async def test_an_answer_that_is_not_an_array_is_refused(
    flow: FlowParts, treazure_history: FakeHistory, how: str
) -> None:
    treazure_history.add(A, H1)
    treazure_history.fail(A, answer(200, json={"items": [H1]}))
    if how == "one":
        with pytest.raises(Rejected, match="not a JSON array"):
            await history.fetch_history(flow, A)
    else:
        assert (await history.fetch_many(flow, [A], 8))["failed"] == 1
        assert len(treazure_history.requests) == 1
    assert HistoryStore(flow.store).fetched(A) is None


async def test_a_malformed_entry_stores_nothing_of_that_answer(
    flow: FlowParts, treazure_history: FakeHistory
) -> None:
    treazure_history.add(A, H1, {**H2, "dateTime": "not a time"})
    with pytest.raises(MalformedHistory):
        await history.fetch_history(flow, A)
    assert stored(flow, A) == []
    assert HistoryStore(flow.store).fetched(A) is None


# -- many contacts ------------------------------------------------------------------------


async def test_fetch_many_bounds_the_requests_in_flight(
    flow: FlowParts, treazure_history: FakeHistory
) -> None:
    contacts = [f"00000000-0000-4000-8000-{k:012d}" for k in range(12)]
    for k, contact in enumerate(contacts):
        treazure_history.add(contact, entry("2026-11-21T08:00:00Z", k + 1, k + 1))
    treazure_history.gate = asyncio.Event()
    treazure_history.reach_at = 3
    task = asyncio.create_task(history.fetch_many(flow, contacts, concurrency=3))
    # Held at the gate: three requests out, and the other nine waiting for a slot.
    await asyncio.wait_for(treazure_history.reached.wait(), 10)
    assert treazure_history.in_flight == 3
    treazure_history.gate.set()
    counts = await asyncio.wait_for(task, 10)
    assert counts == {"contacts": 12, "added": 12, "unknown": 0, "failed": 0}
    assert treazure_history.peak == 3
    assert sorted(c for c, _ in treazure_history.requests) == sorted(contacts)


async def test_fetch_many_uses_its_concurrency(
    flow: FlowParts, treazure_history: FakeHistory
) -> None:
    """Without the bound every request would be out at once: the gate sees all 12."""
    contacts = [f"00000000-0000-4000-8000-{k:012d}" for k in range(12)]
    for contact in contacts:
        treazure_history.add(contact, H1)
    treazure_history.gate = asyncio.Event()
    treazure_history.reach_at = 12
    task = asyncio.create_task(history.fetch_many(flow, contacts, concurrency=64))
    await asyncio.wait_for(treazure_history.reached.wait(), 10)
    treazure_history.gate.set()
    assert (await asyncio.wait_for(task, 10))["added"] == 12
    assert treazure_history.peak == 12


async def test_fetch_many_counts_unknown_and_failed_contacts_and_finishes_the_others(
    flow: FlowParts, treazure_history: FakeHistory
) -> None:
    attempts = flow.settings.HTTP_MAX_ATTEMPTS
    treazure_history.add(A, H1, H2)
    treazure_history.add(B, H1)
    treazure_history.add(C, H1, {**H2, "dateTime": None})  # malformed
    treazure_history.add(D, H3)
    treazure_history.fail(B, *(answer(503) for _ in range(attempts)))  # lasts
    treazure_history.fail(D, answer(503))  # passes
    counts = await history.fetch_many(flow, [A, B, UNKNOWN, C, "not-a-guid", D], 2)
    assert counts == {"contacts": 6, "added": 3, "unknown": 1, "failed": 3}
    assert stored(flow, A) == [H1, H2] and stored(flow, D) == [H3]
    assert stored(flow, B) == [] and stored(flow, C) == []
    # The failed ones are fetched in full by the next refresh.
    treazure_history.entries[C] = [H1]
    again = await history.fetch_many(flow, [A, B, C, D], 2)
    assert again == {"contacts": 4, "added": 2, "unknown": 0, "failed": 0}
    assert treazure_history.froms(B)[-1] is None and treazure_history.froms(A)[-1] is not None


async def test_fetch_many_of_nothing_sends_nothing(
    flow: FlowParts, treazure_history: FakeHistory
) -> None:
    assert await history.fetch_many(flow, [], 8) == \
        {"contacts": 0, "added": 0, "unknown": 0, "failed": 0}
    assert treazure_history.requests == []


# -- retention ----------------------------------------------------------------------------


def ago(days: float) -> str:
    moment = datetime.now(UTC) - timedelta(days=days)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_purge_applies_history_retention_days(
    flow: FlowParts, treazure_history: FakeHistory
) -> None:
    old, recent = entry(ago(45), 5, 5), entry(ago(25), 5, 10)
    treazure_history.add(A, old, recent)
    treazure_history.add(B, entry(ago(31), 1, 1))
    await history.fetch_many(flow, [A, B], 2)
    month = with_settings(flow, HISTORY_RETENTION_DAYS=30)
    assert history.purge(month.store, month.settings) == 2
    assert stored(flow, A) == [recent] and stored(flow, B) == []
    assert history.purge(month.store, month.settings) == 0
    # A fetch after the purge starts from the newest entry: nothing purged comes back.
    assert (await history.fetch_history(flow, A))["added"] == 0
    assert stored(flow, A) == [recent]


async def test_purge_keeps_two_years_by_default(
    flow: FlowParts, treazure_history: FakeHistory
) -> None:
    assert flow.settings.HISTORY_RETENTION_DAYS == 730
    kept, gone = entry(ago(729), 5, 5), entry(ago(731), 5, 10)
    treazure_history.add(A, gone, kept)
    await history.fetch_history(flow, A)
    assert history.purge(flow.store, flow.settings) == 1
    assert stored(flow, A) == [kept]


# -- the chunk's proxy: the environment's, as httpx takes it ------------------------------


def test_a_chunk_takes_the_proxy_the_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy",
                 "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert env_proxy("https://acme.posengine.test.cloud") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert env_proxy("https://acme.posengine.test.cloud") == "http://proxy.internal:3128"
    assert env_proxy("http://acme.posengine.test.cloud") is None
    monkeypatch.setenv("NO_PROXY", "posengine.test.cloud")
    assert env_proxy("https://acme.posengine.test.cloud") is None
