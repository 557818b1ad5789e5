"""The `web` process: Engage's signed `loyalty.addPoints` webhook, a contact's stored
points history (behind an `apikey`), health and metrics — one module per route group.

Here the app is put together: its settings, store, clients and background work, held for
the app's lifetime. Database and Celery calls block, so they run in a small thread pool,
never on the loop.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web
from redis.asyncio import Redis

from worker.base.logs import configure_logging
from worker.base.memory import tune_collector
from worker.base.settings import ConfigError, WebSettings, exit_on_config_error, get_web_settings
from worker.faces.runtime import prepare_store, remote
from worker.faces.web.context import EXECUTOR, HISTORY, LEDGER, REDIS, SETTINGS, STORE
from worker.faces.web.engage_webhook import VERIFIER, engage_webhook
from worker.faces.web.giftcards import add_giftcard_routes
from worker.faces.web.health import CHECK_TIMEOUT, health
from worker.faces.web.history import (
    FETCH_TIMEOUT,
    FETCHES,
    HISTORY_FETCH_TIMEOUT,
    HISTORY_FETCHER,
    HistoryFetcher,
    points_history,
    stop_fetches,
    treazure_fetcher,
)
from worker.faces.web.metrics import metrics
from worker.faces.web.queueing import ENQUEUE, UNSENT, Enqueue, Unsent, celery_enqueue
from worker.faces.web.relay_webhooks import add_relay_routes
from worker.faces.web.resend import resender
from worker.store.database import Store
from worker.store.history import HistoryStore
from worker.store.ledger import Ledger
from worker.systems.engage.webhooks import SvixVerifier

log = logging.getLogger("pointsync.web")


def _verifier(settings: WebSettings) -> SvixVerifier:
    try:
        return SvixVerifier(settings.WEBHOOK_SECRET.get_secret_value())
    except ValueError as exc:  # never chained: the secret stays out of every traceback
        raise ConfigError(f"configuration error: WEBHOOK_SECRET is malformed: {exc}") from None


async def _resources(app: web.Application) -> AsyncIterator[None]:
    url = app[SETTINGS].REDIS_URL
    app[REDIS] = Redis.from_url(url, socket_timeout=CHECK_TIMEOUT,
                                socket_connect_timeout=CHECK_TIMEOUT)
    yield
    await app[REDIS].aclose()
    app[EXECUTOR].shutdown(wait=True)


async def _treazure(app: web.Application) -> AsyncIterator[None]:
    """One set of Treazure clients for the app's lifetime (they belong to its loop)."""
    async with remote(app[SETTINGS]) as parts:
        app[HISTORY_FETCHER] = treazure_fetcher(app, parts)
        yield
        await stop_fetches(app)


async def _injected_fetcher(app: web.Application) -> AsyncIterator[None]:
    yield
    await stop_fetches(app)


def create_app(
    settings: WebSettings, store: Store | None = None, enqueue: Enqueue | None = None,
    history_fetcher: HistoryFetcher | None = None,
    fetch_timeout: float = HISTORY_FETCH_TIMEOUT,
) -> web.Application:
    """`history_fetcher` stands in for Treazure in tests: contact id -> summary, raising
    history.UnknownContact or http.RemoteError as history.fetch_history does."""
    app = web.Application()
    app[SETTINGS] = settings
    app[VERIFIER] = _verifier(settings)
    app[STORE] = store if store is not None else prepare_store(settings.DATABASE_URL)
    app[LEDGER] = Ledger(app[STORE])
    app[HISTORY] = HistoryStore(app[STORE])
    app[ENQUEUE] = enqueue if enqueue is not None else celery_enqueue(settings)
    app[EXECUTOR] = ThreadPoolExecutor(max_workers=4, thread_name_prefix="pointsync-web")
    app[FETCH_TIMEOUT] = fetch_timeout
    app[FETCHES] = {}
    app[UNSENT] = Unsent()
    app.cleanup_ctx.append(_resources)
    app.cleanup_ctx.append(resender)
    if history_fetcher is not None:
        app[HISTORY_FETCHER] = history_fetcher
        app.cleanup_ctx.append(_injected_fetcher)
    else:
        app.cleanup_ctx.append(_treazure)
    app.router.add_post("/webhooks/engage", engage_webhook)
    app.router.add_get("/contacts/{contact_id}/points-history", points_history)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    add_giftcard_routes(app)
    add_relay_routes(app)
    return app


def main() -> None:
    try:
        settings = get_web_settings()
        configure_logging(settings.LOG_FORMAT, settings.LOG_LEVEL)
        app = create_app(settings)
    except ConfigError as exc:
        exit_on_config_error(exc)
    tune_collector()
    url = f"http://{settings.WEB_HOST}:{settings.PORT}"
    web.run_app(app, host=settings.WEB_HOST, port=settings.PORT, access_log=None,
                print=lambda _banner: log.info("pointsync web listening on %s", url))


if __name__ == "__main__":
    main()
