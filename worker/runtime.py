"""Builds the parts a flow needs (store, Redis, clients) from settings, once per process."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from redis.asyncio import Redis

from worker.engage import EngageClient
from worker.ratelimit import SharedRateLimiter
from worker.settings import CoreSettings, Settings, get_core_settings, get_settings
from worker.store import Store, make_engine, upgrade_schema
from worker.treazure import TreazureClient

ENGAGE_RATE_KEY = "pointsync:ratelimit:engage"


_stores: dict[str, Store] = {}


def store_for(url: str) -> Store:
    """One engine per database URL per process."""
    if url not in _stores:
        _stores[url] = Store(make_engine(url))
    return _stores[url]


def get_store(settings: CoreSettings | None = None) -> Store:
    return store_for((settings or get_core_settings()).DATABASE_URL)


def prepare_store(url: str) -> Store:
    store = store_for(url)
    upgrade_schema(store.engine)
    return store


def reset_after_fork() -> None:
    """A forked child must not reuse its parent's database connections."""
    for store in _stores.values():
        store.engine.dispose(close=False)


@dataclass
class Remote:
    settings: Settings
    store: Store
    redis: Redis
    treazure: TreazureClient
    engage: EngageClient


@contextlib.asynccontextmanager
async def remote(settings: Settings | None = None) -> AsyncIterator[Remote]:
    """Clients bound to the running event loop (httpx and redis clients cannot cross loops)."""
    settings = settings or get_settings()
    redis = Redis.from_url(settings.REDIS_URL, socket_timeout=30, health_check_interval=30)
    limiter = SharedRateLimiter(redis, ENGAGE_RATE_KEY, settings.ENGAGE_RATE_LIMIT)
    try:
        async with TreazureClient(settings, redis) as treazure, \
                EngageClient(settings, limiter) as engage:
            yield Remote(settings, get_store(settings), redis, treazure, engage)
    finally:
        await redis.aclose()
