"""The bare baselines of the sync benchmark: what a plain script does with the same job.

No database, no Celery, no Redis: one httpx (async) client per API, orjson for the pages
and the bodies, the contract's auth and headers (/work/shared/reference/contract.md).

- `bare_transfer`: starts the same Balances/Get job, reads its pages (the next one is
  fetched while this one is parsed, as the worker does), posts batches of 1,000 to Engage's
  balance endpoint from `concurrency` pushers, paced by a simple in-process limiter at the
  rate limit (one request every 1/rate s), a 429 waited out and posted again.
- `bare_read`: the same job's pages fetched and parsed, nothing pushed.

`sync_window` is the window the worker's first sync reads (SYNC_FIRST_WINDOW_SECONDS back,
SYNC_LOOKAHEAD_SECONDS ahead, the defaults), so both read the same job.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

VAULT = "/api/v1.0/LoyaltyVault"
BATCH = 1000
USER_AGENT = "pointsync-bench-bare/1.0"
FIRST_WINDOW = timedelta(hours=2)  # the worker's SYNC_FIRST_WINDOW_SECONDS default
LOOKAHEAD = timedelta(hours=2)  # the worker's SYNC_LOOKAHEAD_SECONDS default


@dataclass
class BareResult:
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0  # this process's CPU (both threads of httpx/asyncio)
    pages: int = 0
    items: int = 0
    requests: int = 0  # balance posts answered 202
    retried_429: int = 0
    not_accepted: int = 0
    first_page_seconds: float = 0.0  # job start to the first page in hand
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "wall_seconds": round(self.wall_seconds, 2),
            "cpu_seconds": round(self.cpu_seconds, 2),
            "pages": self.pages,
            "items": self.items,
            "requests": self.requests,
            "retried_429": self.retried_429,
            "not_accepted": self.not_accepted,
            "first_page_seconds": round(self.first_page_seconds, 3),
        }


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sync_window(now: datetime | None = None) -> tuple[str, str]:
    now = now or datetime.now(UTC)
    return _utc_text(now - FIRST_WINDOW), _utc_text(now + LOOKAHEAD)


class Pacer:
    """One request every 1/rate seconds, in the order asked: a next-free-slot reservation."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.next_slot = 0.0

    async def wait(self) -> None:
        now = time.monotonic()
        slot = max(now, self.next_slot)
        self.next_slot = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


async def _token(treazure: httpx.AsyncClient, client_id: str, secret: str) -> str:
    answer = await treazure.post("/identity/connect/token", data={
        "grant_type": "client_credentials", "client_id": client_id,
        "client_secret": secret, "scope": "api_loyaltyvault"})
    answer.raise_for_status()
    return str(answer.json()["access_token"])


async def _pages(treazure: httpx.AsyncClient, window: tuple[str, str], loyalty_id: str,
                 result: BareResult) -> AsyncIterator[list[dict[str, Any]]]:
    """The job's pages as parsed items, the next page requested while one is consumed."""
    began = time.perf_counter()
    started = await treazure.post(f"{VAULT}/Balances/Get", content=orjson.dumps(
        {"mutatedFrom": window[0], "mutatedTo": window[1],
         "loyaltyPointDefinitionId": loyalty_id}),
        headers={"Content-Type": "application/json"})
    started.raise_for_status()
    href = orjson.loads(started.content)["href"]
    while True:  # 202 Running until the job is done
        response = await treazure.get(f"{href}/result")
        if response.status_code != 202:
            break
        await asyncio.sleep(float(response.headers.get("Retry-After", "0.2")))
    result.first_page_seconds = time.perf_counter() - began
    while True:
        response.raise_for_status()
        page = orjson.loads(response.content)
        following = page["next"]
        fetch = asyncio.create_task(treazure.get(following)) if following else None
        result.pages += 1
        result.items += len(page["items"])
        yield page["items"]
        if fetch is None:
            return
        response = await fetch


def _clients(treazure_url: str, engage_url: str) -> tuple[httpx.AsyncClient, httpx.AsyncClient]:
    timeout = httpx.Timeout(60.0, connect=5.0)
    treazure = httpx.AsyncClient(base_url=treazure_url, timeout=timeout, trust_env=False,
                                 headers={"User-Agent": USER_AGENT,
                                          "Accept": "application/json"})
    engage = httpx.AsyncClient(base_url=engage_url, timeout=timeout, trust_env=False,
                               limits=httpx.Limits(max_connections=16))
    return treazure, engage


async def _read(treazure_url: str, env: dict[str, str]) -> BareResult:
    result = BareResult()
    treazure, engage = _clients(treazure_url, "http://unused")
    async with treazure, engage:
        token = await _token(treazure, env["TREAZURE_CLIENT_ID"], env["TREAZURE_CLIENT_SECRET"])
        treazure.headers["Authorization"] = f"Bearer {token}"
        async for _items in _pages(treazure, sync_window(), env["TREAZURE_LOYALTY_ID"], result):
            pass
    return result


async def _transfer(env: dict[str, str], rate: float, concurrency: int,
                    definition_id: int) -> BareResult:
    result = BareResult()
    treazure, engage = _clients(env["TREAZURE_BASE_URL"], env["ENGAGE_BASE_URL"])
    headers = {"apikey": env["ENGAGE_API_KEY"], "User-Agent": USER_AGENT,
               "Content-Type": "application/json", "Accept": "application/json"}
    pacer = Pacer(rate)
    # A few batches read ahead, as the worker's lanes hold: memory stays bounded.
    batches: asyncio.Queue[list[dict[str, Any]] | None] = asyncio.Queue(maxsize=4 * concurrency)

    async def read() -> None:
        batch: list[dict[str, Any]] = []
        async for items in _pages(treazure, sync_window(), env["TREAZURE_LOYALTY_ID"], result):
            for item in items:
                batch.append({"contactId": item["accountNumber"], "amount": item["balance"],
                              "definitionId": definition_id, "timeStamp": item["mutatedAt"]})
                if len(batch) == BATCH:
                    await batches.put(batch)
                    batch = []
        if batch:
            await batches.put(batch)
        for _ in range(concurrency):
            await batches.put(None)

    async def push() -> None:
        while (batch := await batches.get()) is not None:
            body = orjson.dumps(batch)
            while True:
                await pacer.wait()
                answer = await engage.post("/api/v3/point-accounts/balances", content=body,
                                           headers=headers)
                if answer.status_code != 429:
                    break
                result.retried_429 += 1
                await asyncio.sleep(float(answer.headers.get("Retry-After", "1")))
            answer.raise_for_status()
            result.requests += 1
            result.not_accepted += len(orjson.loads(answer.content).get("notAccepted") or [])

    async with treazure, engage:
        token = await _token(treazure, env["TREAZURE_CLIENT_ID"], env["TREAZURE_CLIENT_SECRET"])
        treazure.headers["Authorization"] = f"Bearer {token}"
        await asyncio.gather(read(), *(push() for _ in range(concurrency)))
    return result


def _timed(run: Any) -> BareResult:
    began, cpu = time.perf_counter(), time.process_time()
    result: BareResult = asyncio.run(run)
    result.wall_seconds = time.perf_counter() - began
    result.cpu_seconds = time.process_time() - cpu
    return result


def bare_read(env: dict[str, str]) -> BareResult:
    """Fetch and parse every page of the first sync's job; push nothing."""
    return _timed(_read(env["TREAZURE_BASE_URL"], env))


def bare_transfer(env: dict[str, str], rate: float, concurrency: int = 4,
                  definition_id: int = 1) -> BareResult:
    """Read the first sync's job and post every balance to Engage, batches of 1,000 at
    `rate` requests a second from `concurrency` pushers."""
    return _timed(_transfer(env, rate, concurrency, definition_id))
