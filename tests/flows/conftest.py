"""Flow tests: the real clients and store, httpx answered by respx, Redis by fakeredis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import fakeredis
import httpx
import orjson
import pytest
import respx

from tests.support.flows import ENGAGE, JOB, TREAZURE, FakeRemotes, Parts
from worker.base import settings as settings_module
from worker.base.ratelimit import SharedRateLimiter
from worker.base.settings import Settings
from worker.store.database import Store
from worker.store.engine import make_engine
from worker.store.schema import upgrade_schema
from worker.systems.engage.client import EngageClient
from worker.systems.treazure.client import TreazureClient


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    env = {
        "TREAZURE_BASE_URL": TREAZURE, "TREAZURE_CLIENT_ID": "client",
        "TREAZURE_CLIENT_SECRET": "s3cr3t-client", "TREAZURE_LOYALTY_ID": "points",
        "ENGAGE_BASE_URL": ENGAGE, "ENGAGE_API_KEY": "s3cr3t-key",
        "ENGAGE_RATE_LIMIT": "100000", "HTTP_MAX_BACKOFF_SECONDS": "0.01",
        "ENGAGE_BATCH_SIZE": "3", "ENGAGE_PUSH_CONCURRENCY": "2",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings_module.clear_cache()
    yield settings_module.get_settings()
    settings_module.clear_cache()


@pytest.fixture
def store() -> Store:
    engine = make_engine("sqlite://")
    upgrade_schema(engine)
    return Store(engine)


@pytest.fixture
def remotes() -> Iterator[FakeRemotes]:
    fake = FakeRemotes()

    def start_job(request: httpx.Request) -> httpx.Response:
        fake.jobs.append(orjson.loads(request.content))
        return httpx.Response(202, json={"href": JOB})

    def result(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params.get("page", "1"))
        items = fake.pages[page - 1] if fake.pages else []
        has_next = page < len(fake.pages)
        return httpx.Response(200, json={
            "items": items, "next": f"{JOB}/result?page={page + 1}" if has_next else None,
        })

    def push(request: httpx.Request) -> httpx.Response:
        if not fake.pushes_kept:
            for router in fake.forget:
                router.calls.clear()
                for route in router.routes:
                    route.calls.clear()
        if fake.engage_fail:
            fake.engage_fail -= 1
            return httpx.Response(503, text="down")
        rows = orjson.loads(request.content)
        fake.pushes.append(rows if fake.pushes_kept else [])
        rejected = [r for r in rows if r["contactId"] in fake.not_found]
        for row in rows if fake.pushes_kept else ():
            if row["contactId"] not in fake.not_found:
                fake.engage[row["contactId"]] = row["amount"]
        return httpx.Response(202, json={
            "transactionId": "t", "notAccepted": [
                {"contactId": r["contactId"], "reason": "ContactNotFound"} for r in rejected
            ],
        })

    with respx.mock(assert_all_called=False) as router:
        router.post(f"{TREAZURE}/identity/connect/token").respond(
            200, json={"access_token": "tok", "token_type": "Bearer", "expires_in": 3600})
        router.post(f"{TREAZURE}/api/v1.0/LoyaltyVault/Balances/Get").mock(side_effect=start_job)
        router.get(url__regex=rf"{TREAZURE}{JOB}/result.*").mock(side_effect=result)
        router.post(f"{ENGAGE}/api/v3/point-accounts/balances").mock(side_effect=push)
        fake.forget.append(router)
        yield fake


@pytest.fixture
async def parts(settings: Settings, store: Store, remotes: FakeRemotes) -> AsyncIterator[Parts]:
    redis = fakeredis.FakeAsyncRedis()
    limiter = SharedRateLimiter(redis, "rate", settings.ENGAGE_RATE_LIMIT)
    async with TreazureClient(settings, redis) as treazure, \
            EngageClient(settings, limiter) as engage:
        yield Parts(settings, store, redis, treazure, engage)
    await redis.aclose()
