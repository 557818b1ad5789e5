"""Flow 3, points history: the real Treazure client and store, respx answering the History
call (contract §3) the way Treazure does, `from=` included."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from tests.support.flows import TREAZURE, FakeRemotes, Parts
from worker.base.http import Rejected, Retryable
from worker.base.money import utc_micros
from worker.base.point_request import InvalidArgument
from worker.base.settings import Settings
from worker.flows import history
from worker.flows.parts import Parts as FlowParts
from worker.store.history import HistoryStore, MalformedHistory
from worker.store.pushguard import PushGuard

A, B, C, D = (f"00000000-0000-4000-8000-00000000000{i}" for i in (1, 2, 3, 4))
UNKNOWN = "00000000-0000-4000-8000-0000000000ff"
HISTORY_URL = rf"{TREAZURE}/api/v1.0/LoyaltyVault/Account/(?P<contact>[^/]+)" \
    r"/LoyaltyPrograms/(?P<program>[^/]+)/History"


def entry(at: str, amount: float, balance: float, receipt: str | None = None) -> dict[str, Any]:
    return {"dateTime": at, "amount": amount,
            "transactionType": "Load" if amount >= 0 else "Redeem", "expiresAt": None,
            "balance": balance, "comment": "flow test", "operatorId": "pointsync",
            "shopId": None, "posId": None, "receiptNr": receipt, "properties": {}}


def us(text: str) -> int:
    return utc_micros(datetime.fromisoformat(text))


@dataclass
class FakeHistory:
    """Treazure's History endpoint: each account's entries oldest first, `from=` honoured
    (at or after), queued answers per account for faults, and an optional gate that holds
    every request until released (to count requests in flight)."""

    entries: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    faults: dict[str, list[httpx.Response]] = field(default_factory=lambda: defaultdict(list))
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (contact, from)
    programs: list[str] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)
    gate: asyncio.Event | None = None
    in_flight: int = 0
    peak: int = 0
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    reach_at: int = 0  # `reached` is set once this many requests are in flight

    def add(self, contact: str, *items: dict[str, Any]) -> None:
        self.entries.setdefault(contact, []).extend(items)

    def fail(self, contact: str, *answers: httpx.Response) -> None:
        self.faults[contact].extend(answers)

    def froms(self, contact: str) -> list[str | None]:
        return [since for who, since in self.requests if who == contact]

    async def answer(self, request: httpx.Request, contact: str, program: str) -> httpx.Response:
        self.requests.append((contact, request.url.params.get("from")))
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
                return self.faults[contact].pop(0)
            if contact not in self.entries:
                return httpx.Response(404, json={"error": "AccountNotFound"})
            since = request.url.params.get("from")
            rows = [e for e in self.entries[contact]
                    if since is None or us(e["dateTime"]) >= us(since)]
            return httpx.Response(200, content=orjson.dumps(rows),
                                  headers={"Content-Type": "application/json"})
        finally:
            self.in_flight -= 1


@pytest.fixture
def treazure_history(remotes: FakeRemotes) -> FakeHistory:
    fake = FakeHistory()
    (router,) = remotes.forget  # the respx router the flow fixtures answer with
    router.get(url__regex=HISTORY_URL).mock(side_effect=fake.answer)
    return fake


@pytest.fixture
def flow(parts: Parts) -> FlowParts:
    """The Parts a task hands to the history flow."""
    guard = PushGuard(parts.redis, claim_ttl_seconds=60, marker_ttl_seconds=600)
    return FlowParts(parts.settings, parts.store, parts.redis, parts.treazure, parts.engage,
                     guard)


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


# -- errors: the rules of every Treazure read ---------------------------------------------


@pytest.mark.parametrize(
    "first",
    [
        httpx.Response(503, text="<html>down</html>"),
        httpx.Response(500, json={"error": "boom"}),
        httpx.Response(502, text="bad gateway"),
        httpx.Response(504, text="timeout"),
        httpx.Response(429, headers={"Retry-After": "0"}),
        httpx.Response(429),
        httpx.Response(200, text="<html>a proxy page</html>"),  # garbled success
    ],
    ids=["503-html", "500", "502", "504", "429-retry-after", "429", "garbled-200"],
)
async def test_a_transient_failure_is_retried_and_the_history_arrives(
    flow: FlowParts, treazure_history: FakeHistory, first: httpx.Response
) -> None:
    treazure_history.add(A, H1, H2)
    treazure_history.fail(A, first)
    result = await history.fetch_history(flow, A)
    assert len(treazure_history.requests) == 2
    assert result["added"] == 2 and stored(flow, A) == [H1, H2]


async def test_a_dropped_connection_is_retried(
    flow: FlowParts, treazure_history: FakeHistory, remotes: FakeRemotes
) -> None:
    treazure_history.add(A, H1)
    (router,) = remotes.forget
    route = router.routes[-1]  # the History route added by treazure_history
    answers = iter([httpx.RemoteProtocolError("reset"), httpx.ConnectError("refused")])

    async def flaky(request: httpx.Request, contact: str, program: str) -> httpx.Response:
        failure = next(answers, None)
        if failure is not None:
            raise failure
        return await treazure_history.answer(request, contact, program)

    route.side_effect = flaky
    result = await history.fetch_history(flow, A)
    assert result["added"] == 1 and len(route.calls) == 3


async def test_a_failure_that_lasts_gives_up_after_the_attempts_and_stores_nothing(
    flow: FlowParts, treazure_history: FakeHistory
) -> None:
    attempts = flow.settings.HTTP_MAX_ATTEMPTS
    treazure_history.add(A, H1)
    treazure_history.fail(A, *(httpx.Response(503) for _ in range(attempts)))
    with pytest.raises(Retryable, match="HTTP 503"):
        await history.fetch_history(flow, A)
    assert len(treazure_history.requests) == attempts
    assert HistoryStore(flow.store).fetched(A) is None
    assert (await history.fetch_history(flow, A))["added"] == 1  # next time it works


async def test_a_refusal_is_not_retried(flow: FlowParts, treazure_history: FakeHistory) -> None:
    treazure_history.add(A, H1)
    treazure_history.fail(A, httpx.Response(400, json={"error": "BadRequest"}))
    with pytest.raises(Rejected, match="HTTP 400") as raised:
        await history.fetch_history(flow, A)
    assert raised.value.status == 400
    assert len(treazure_history.requests) == 1


async def test_an_expired_token_is_replaced_once(
    flow: FlowParts, treazure_history: FakeHistory, remotes: FakeRemotes
) -> None:
    treazure_history.add(A, H1)
    treazure_history.fail(A, httpx.Response(401, json={"error": "invalid_token"}))
    (router,) = remotes.forget
    result = await history.fetch_history(flow, A)
    assert result["added"] == 1
    tokens = [c for c in router.calls if c.request.url.path == "/identity/connect/token"]
    assert len(treazure_history.requests) == 2 and len(tokens) == 2
    assert treazure_history.auth[0] == treazure_history.auth[1] == "Bearer tok"


async def test_an_answer_that_is_not_an_array_is_refused(
    flow: FlowParts, treazure_history: FakeHistory
) -> None:
    treazure_history.add(A, H1)
    treazure_history.fail(A, httpx.Response(200, json={"items": [H1]}))
    with pytest.raises(Rejected, match="not a JSON array"):
        await history.fetch_history(flow, A)
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
    treazure_history.fail(B, *(httpx.Response(503) for _ in range(attempts)))  # lasts
    treazure_history.fail(D, httpx.Response(503))  # passes
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
