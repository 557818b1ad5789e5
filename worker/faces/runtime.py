"""Builds the parts a flow needs (store, Redis, clients) from settings, once per process."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from redis.asyncio import Redis

from worker.base import telemetry
from worker.base.memory import trim_heap
from worker.base.ratelimit import SharedRateLimiter
from worker.base.settings import CoreSettings, Settings, get_core_settings, get_settings
from worker.flows.parts import Parts
from worker.store.database import Store
from worker.store.engine import make_engine
from worker.store.pushguard import PushGuard
from worker.store.schema import upgrade_schema
from worker.systems.engage.client import EngageClient
from worker.systems.toggle.client import ToggleClient
from worker.systems.treazure.client import TreazureClient

ENGAGE_RATE_KEY = "pointsync:ratelimit:engage"
T = TypeVar("T")


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


def release_memory() -> None:
    """Hand back what a long task left behind: the pooled database connections are closed
    (each SQLite connection keeps up to its cache_size of pages), garbage collected, free
    heap returned to the system. The next task opens a connection again. A single-
    connection store (SQLite in memory) keeps its connection: it holds the data."""
    for store in _stores.values():
        if not store.single_connection:
            store.engine.dispose()
    gc.collect()
    trim_heap()


def reset_after_fork() -> None:
    """A forked child must not reuse its parent's database connections or clients."""
    for store in _stores.values():
        store.engine.dispose(close=False)
    forget_process_loop()


@contextlib.asynccontextmanager
async def remote(settings: Settings | None = None) -> AsyncIterator[Parts]:
    """Clients bound to the running event loop (httpx and redis clients cannot cross loops)."""
    settings = settings or get_settings()
    redis = Redis.from_url(settings.REDIS_URL, socket_timeout=30, health_check_interval=30)
    limiter = SharedRateLimiter(redis, ENGAGE_RATE_KEY, settings.ENGAGE_RATE_LIMIT)
    # Response counts reach Redis (for /metrics) while a long task runs, and on the way out.
    flusher = telemetry.PeriodicFlush(redis)
    try:
        async with contextlib.AsyncExitStack() as clients:
            treazure = await clients.enter_async_context(TreazureClient(settings, redis))
            engage = await clients.enter_async_context(EngageClient(settings, limiter))
            toggle = await clients.enter_async_context(ToggleClient(settings, redis)) \
                if settings.toggle_enabled else None
            yield Parts(settings, get_store(settings), redis, treazure, engage,
                        PushGuard.for_settings(redis, settings), toggle)
    finally:
        try:
            await flusher.close()
        finally:
            await redis.aclose()


# One event loop per worker process, kept between tasks, with its clients: a point
# transaction is a few milliseconds of work, and building an HTTP client, a Redis pool and
# a token lookup for each would cost more than the work itself.
_loop: asyncio.AbstractEventLoop | None = None
_parts_stack: contextlib.AsyncExitStack | None = None
_parts: Parts | None = None


def run_with_parts(work: Callable[[Parts], Awaitable[T]]) -> T:
    """Run `work(parts)` on this process's long-lived loop and clients."""
    global _loop
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
    try:
        return _loop.run_until_complete(_with_parts(work))
    except BaseException:
        # Interrupted mid-work (a time limit's exception, say): work left on the loop
        # must not resume inside the next task, so the loop and its clients go.
        _discard_loop(_loop)
        raise


def _discard_loop(loop: asyncio.AbstractEventLoop) -> None:
    leftovers = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in leftovers:
        task.cancel()
    with contextlib.suppress(BaseException):
        loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
    with contextlib.suppress(BaseException):
        if _parts_stack is not None:
            loop.run_until_complete(_parts_stack.aclose())
    loop.close()
    forget_process_loop()


async def _with_parts(work: Callable[[Parts], Awaitable[T]]) -> T:
    global _parts, _parts_stack
    if _parts is None:
        stack = contextlib.AsyncExitStack()
        _parts = await stack.enter_async_context(remote())
        _parts_stack = stack
    result = await work(_parts)
    # Before the task returns, at most once a second (the periodic flush runs only while a
    # task does): under load the next task flushes this one's tail within about a second;
    # after a burst, up to a second of counts waits for the process's next task.
    if telemetry.task_flush_due():
        await telemetry.try_flush(_parts.redis)
    return result


def forget_process_loop() -> None:
    """A forked child starts with no loop and no clients of its own."""
    global _loop, _parts, _parts_stack
    _loop, _parts, _parts_stack = None, None, None
