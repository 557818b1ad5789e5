"""The `web` process: Engage's Svix-signed `loyalty.addPoints` webhook, a contact's stored
points history (behind an `apikey`), and health.

A delivery is answered `202` only once its ledger row is committed; the task that books it
is queued afterwards, and a row whose message was lost is finished by the scheduled sweep.
Database and Celery calls block, so they run in a small thread pool, never on the loop.

A history request for a contact never fetched fetches it from Treazure first, through one
set of clients kept for the app's lifetime; concurrent requests for the same contact share
one fetch, and a fetch that outlasts the request's patience goes on in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from svix.webhooks import Webhook, WebhookVerificationError

from worker.base.arguments import InvalidArgument
from worker.base.http import RemoteError
from worker.base.logs import configure_logging
from worker.base.point_request import (
    PointRequest,
    validate_contact_id,
    validate_reference,
    validate_request,
)
from worker.base.settings import ConfigError, WebSettings, exit_on_config_error, get_web_settings
from worker.faces.runtime import prepare_store, remote
from worker.faces.web.metrics import scrape
from worker.flows import history
from worker.flows.history import UnknownContact
from worker.flows.parts import Parts
from worker.flows.points import decimal_text, record
from worker.store.database import Store, utcnow
from worker.store.history import HistoryStore, MalformedHistory
from worker.store.ledger import Ledger, LedgerRow

log = logging.getLogger("pointsync.web")

ADD_POINTS = "loyalty.addPoints"
SOURCE = "webhook"
SIGNATURE_HEADERS = ("svix-id", "svix-timestamp", "svix-signature")
REUSED = "reference: already used for a different transaction"
CHECK_TIMEOUT = 2.0  # seconds, per health check
HISTORY_FETCH_TIMEOUT = 25.0  # seconds a history request waits for Treazure (the fetch goes on)
DEFAULT_OFFSET, DEFAULT_COUNT, MAX_COUNT = 0, 100, 1000
API_KEY_REFUSED = "apikey: missing or wrong"
UNKNOWN_CONTACT = "contact_id: unknown contact"

Enqueue = Callable[[dict[str, str]], object]
# contact id -> the fetch's summary; raises history.UnknownContact or http.RemoteError
HistoryFetcher = Callable[[str], Awaitable[dict[str, Any]]]
_T = TypeVar("_T")

SETTINGS = web.AppKey("settings", WebSettings)
STORE = web.AppKey("store", Store)
LEDGER = web.AppKey("ledger", Ledger)
WEBHOOK = web.AppKey("webhook", Webhook)
ENQUEUE: web.AppKey[Enqueue] = web.AppKey("enqueue")
EXECUTOR = web.AppKey("executor", ThreadPoolExecutor)
REDIS = web.AppKey("redis", Redis)
HISTORY = web.AppKey("history", HistoryStore)
HISTORY_FETCHER: web.AppKey[HistoryFetcher] = web.AppKey("history_fetcher")
FETCH_TIMEOUT = web.AppKey("fetch_timeout", float)
FETCHES: web.AppKey[dict[str, asyncio.Task[dict[str, Any]]]] = web.AppKey("fetches")
UNSENT: web.AppKey[Unsent] = web.AppKey("unsent")
# After a failed enqueue, Redis is asked this often whether it is back; then the rows
# recorded meanwhile are queued, this many per database read.
RESEND_POLL_SECONDS = 1.0
RESEND_PAGE = 500
RECORDED_MARGIN = timedelta(seconds=60)


class _Refused(Exception):
    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status, self.error = status, error


def _refuse(status: int, error: str) -> NoReturn:
    raise _Refused(status, error)


async def blocking(app: web.Application, fn: Callable[..., _T], *args: Any) -> _T:
    """Run a blocking call (database, broker) in the app's thread pool."""
    return await asyncio.get_running_loop().run_in_executor(app[EXECUTOR], partial(fn, *args))


# -- POST /webhooks/engage ---------------------------------------------------------------

async def engage_webhook(request: web.Request) -> web.Response:
    body = await request.read()
    try:
        _verify(request.app[WEBHOOK], body, request.headers)
        event = _parse(body)
        if event["eventType"] != ADD_POINTS:
            return web.json_response({"ignored": event["eventType"]})
        payload = _payload(event)
        reference = _reference(event, request.headers)
        status, answer, queue = await blocking(
            request.app, _record, request.app[LEDGER], payload, reference)
    except _Refused as refused:
        log.warning("webhook refused (%s): %s", refused.status, refused.error)
        return web.json_response({"error": refused.error}, status=refused.status)
    if queue is not None:
        await _enqueue(request.app, queue)
    return web.json_response(answer, status=status)


def _verify(hook: Webhook, body: bytes, headers: Mapping[str, str]) -> None:
    wanted = {name: headers.get(name, "") for name in SIGNATURE_HEADERS}
    if missing := [name for name, value in wanted.items() if not value]:
        _refuse(401, f"signature: missing header {', '.join(missing)}")
    try:
        hook.verify(body, wanted)
    except WebhookVerificationError as exc:
        why = str(exc)
        if "too old" in why or "too new" in why:
            _refuse(401, f"timestamp: more than 5 minutes off ({why.lower()})")
        if "Invalid Signature Headers" in why:
            _refuse(401, "timestamp: svix-timestamp is not a Unix time")
        _refuse(401, "signature: does not match the body (wrong secret or altered body)")
    except UnicodeDecodeError:
        _refuse(401, "signature: cannot be checked, the body is not UTF-8")
    except ValueError:  # svix splits and base64-decodes the header unguarded
        _refuse(401, "signature: malformed svix-signature header")


def _parse(body: bytes) -> dict[str, Any]:
    def no_constants(name: str) -> NoReturn:
        raise ValueError(f"{name} is not JSON")

    try:  # Decimal: an amount keeps the exact text the JSON number carried
        event = json.loads(body, parse_float=Decimal, parse_constant=no_constants)
    except (ValueError, RecursionError):
        _refuse(400, "body: not valid JSON")
    if not isinstance(event, dict):
        _refuse(400, "body: must be a JSON object")
    if not isinstance(event.get("eventType"), str):
        _refuse(400, "eventType: missing or not a string")
    return event


def _payload(event: dict[str, Any]) -> dict[str, Any]:
    if event.get("isEncrypted") is True:
        _refuse(400, "payload: encrypted, which this receiver does not support "
                     "(turn payload encryption off for the endpoint)")
    payload = event.get("payload")
    if not isinstance(payload, dict):
        _refuse(400, "payload: missing or not an object")
    return payload


def _reference(event: dict[str, Any], headers: Mapping[str, str]) -> str:
    value = event.get("id")
    if value is None or value == "":
        value = headers.get("svix-id")  # never empty here: _verify demands it
    try:
        return validate_reference(value)
    except InvalidArgument as exc:
        _refuse(400, str(exc))


def _record(
    ledger: Ledger, payload: dict[str, Any], reference: str
) -> tuple[int, dict[str, Any], PointRequest | None]:
    """(status, answer, request to queue or None), with the row committed."""
    contact, description = payload.get("contactId"), payload.get("description")
    try:
        point_request = validate_request(contact, payload.get("amount"), description, reference)
    except InvalidArgument as exc:
        reason = str(exc)
        row, _ = ledger.record_invalid(
            reference, contact if isinstance(contact, str) else "", description, SOURCE, reason)
        if row.amount_cents is not None:  # the reference belongs to a valid transaction
            _refuse(409, REUSED)
        log.warning("webhook %s refused: %s", reference, reason)
        return 422, {"error": reason, "reference": reference}, None
    try:
        row, created = record(ledger.store, point_request, SOURCE, expect_new=True)
    except InvalidArgument:
        _refuse(409, REUSED)
    log.info("webhook %s: %s %s points for %s (%s)", reference,
             "recorded" if created else "redelivered", point_request.amount,
             point_request.contact_id, row.state)
    answer = {"reference": row.reference, "state": row.state, "duplicate": not created}
    return 202, answer, None if row.final else point_request


async def _enqueue(app: web.Application, point_request: PointRequest) -> None:
    kwargs = {"contact_id": point_request.contact_id, "amount": str(point_request.amount),
              "description": point_request.description, "reference": point_request.reference}
    tried_at = utcnow()
    try:
        await blocking(app, app[ENQUEUE], kwargs)
    except Exception as exc:  # the row is committed: queued again once Redis is back
        # It was recorded just before; the margin costs at most a second message for a
        # row nobody took up yet, which that row's lease makes harmless.
        app[UNSENT].note(tried_at - RECORDED_MARGIN)
        log.warning("webhook %s: recorded, but queueing its task failed (%s); "
                    "it is queued once Redis answers again", point_request.reference,
                    _short(exc, app[SETTINGS]))


class Unsent:
    """When this process first failed to queue a recorded row since it last caught up
    (None: nothing left unsent); `noticed` wakes the resender."""

    def __init__(self) -> None:
        self.since: datetime | None = None
        self.noticed = asyncio.Event()

    def note(self, since: datetime) -> None:
        self.since = since if self.since is None else min(self.since, since)
        self.noticed.set()

    def take(self) -> datetime | None:
        since, self.since = self.since, None
        self.noticed.clear()
        return since


async def _resend_unsent(app: web.Application) -> None:
    """Once Redis answers again after a failed enqueue, queue the rows this process
    recorded but could not queue: within seconds of Redis's return, not at the sweep's
    POINTS_STALE_SECONDS (the sweep stays the last resort)."""
    unsent = app[UNSENT]
    while True:
        await unsent.noticed.wait()
        if await _check_redis(app) != "ok":
            await asyncio.sleep(RESEND_POLL_SECONDS)
            continue
        since = unsent.take()
        if since is None:
            continue
        queued, error = await blocking(app, _queue_recorded, app, since)
        if error is not None:  # Redis went away again: this round is taken up later
            unsent.note(since)
            log.warning("queueing recorded webhook rows stopped after %d (%s)", queued, error)
            await asyncio.sleep(RESEND_POLL_SECONDS)
        elif queued:
            log.info("Redis answers again: queued %d webhook row(s) recorded meanwhile", queued)


def _queue_recorded(app: web.Application, since: datetime) -> tuple[int, str | None]:
    """Queue every webhook row recorded since `since` and never taken up, page by page;
    (how many were queued, the error that stopped it or None)."""
    ledger, queued, after = app[LEDGER], 0, ""
    while rows := ledger.never_sent(SOURCE, since, after, RESEND_PAGE):
        for row in rows:
            try:
                app[ENQUEUE](_row_kwargs(row))
            except Exception as exc:
                return queued, _short(exc, app[SETTINGS])
            queued += 1
        after = rows[-1].reference
    return queued, None


def _row_kwargs(row: LedgerRow) -> dict[str, str]:
    return {"contact_id": row.contact_id, "amount": decimal_text(row.amount_cents) or "",
            "description": row.description or "", "reference": row.reference}


def celery_enqueue(settings: WebSettings) -> Enqueue:
    """Queue `pointsync.add_points` on the broker, fire-and-forget.

    A Celery app of its own without a result backend: with one, every send subscribes this
    long-lived process to the task's result channel, and with Redis down a send stalls ~20 s
    on backend reconnects. The worker still stores the task's result as usual.
    """
    from celery import Celery

    from worker.faces.celery.app import celery_config

    sender = Celery("pointsync-web", set_as_current=False)
    sender.conf.update(celery_config(settings), result_backend=None, beat_schedule={})
    policy = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}

    def enqueue(kwargs: dict[str, str]) -> object:
        # Nobody reads this result (the ledger row is the outcome): none is stored.
        return sender.send_task("pointsync.add_points", kwargs=kwargs, retry_policy=policy,
                                ignore_result=True)

    return enqueue


# -- GET /contacts/{contact_id}/points-history -----------------------------------------------

async def points_history(request: web.Request) -> web.Response:
    app = request.app
    try:
        _check_api_key(request.headers, app[SETTINGS])
        try:
            contact_id = validate_contact_id(request.match_info["contact_id"])
        except InvalidArgument as exc:
            _refuse(400, str(exc))
        offset = _query_int(request.query, "offset", DEFAULT_OFFSET, 0, None)
        count = _query_int(request.query, "count", DEFAULT_COUNT, 1, MAX_COUNT)
        try:
            if await blocking(app, app[HISTORY].fetched, contact_id) is None:
                await _fetch_once(app, contact_id)
            items, total = await blocking(app, app[HISTORY].page, contact_id, offset, count)
        except SQLAlchemyError as exc:
            log.warning("history of %s: database error: %s", contact_id,
                        _short(exc, app[SETTINGS]))
            _refuse(503, "database: unavailable, try again later")
    except _Refused as refused:
        if refused.status >= 500:
            log.warning("history request failed (%s): %s", refused.status, refused.error)
        return web.json_response({"error": refused.error}, status=refused.status)
    return web.json_response(history_answer(items, total, offset))


def history_answer(items: list[dict[str, Any]], total: int, offset: int) -> dict[str, Any]:
    """The answer's shape, as Engage's own list endpoints have it (the CLI prints it too)."""
    return {"items": items, "totalCount": total, "offset": offset, "count": len(items)}


def _check_api_key(headers: Mapping[str, str], settings: WebSettings) -> None:
    given = headers.get("apikey", "")
    wanted = settings.WEB_API_KEY.get_secret_value()
    # Bytes: compare_digest refuses non-ASCII str. An empty key (configured or sent) never
    # matches. Neither value is ever logged or echoed.
    same = hmac.compare_digest(given.encode("utf-8", "surrogatepass"), wanted.encode("utf-8"))
    if not (given and wanted and same):
        _refuse(401, API_KEY_REFUSED)


_DIGITS = re.compile(r"[0-9]{1,18}")  # ASCII digits only; 18 keep it inside a BIGINT


def _query_int(
    query: Mapping[str, str], name: str, default: int, low: int, high: int | None
) -> int:
    raw = query.get(name, "")
    if raw == "":  # absent, or left empty as in `?offset=&count=`
        return default
    rule = f"from {low} to {high}" if high is not None else f"≥ {low} (at most 18 digits)"
    value = int(raw) if _DIGITS.fullmatch(raw) else None
    if value is None or value < low or (high is not None and value > high):
        shown = raw if len(raw) <= 40 else raw[:39] + "…"
        _refuse(400, f"{name}: must be a whole number {rule}, got {shown!r}")
    return value


async def _fetch_once(app: web.Application, contact_id: str) -> None:
    """Fetch the contact's history from Treazure, sharing a fetch already under way; wait
    at most FETCH_TIMEOUT for it (it goes on in the background after that)."""
    fetches = app[FETCHES]
    task = fetches.get(contact_id)
    if task is None:
        task = asyncio.ensure_future(app[HISTORY_FETCHER](contact_id))
        fetches[contact_id] = task
        task.add_done_callback(partial(_fetch_done, fetches, contact_id))
    try:
        summary = await asyncio.wait_for(asyncio.shield(task), app[FETCH_TIMEOUT])
    except TimeoutError:
        _refuse(504, f"Treazure: no answer within {app[FETCH_TIMEOUT]:g} s; "
                     "the history is still being fetched, try again shortly")
    except RemoteError as exc:
        _refuse(502, f"Treazure: {_masked(exc.reason, app[SETTINGS])}")
    except MalformedHistory:
        _refuse(502, "Treazure: sent a history entry without a valid dateTime")
    except UnknownContact:  # Treazure answered 404
        _refuse(404, UNKNOWN_CONTACT)
    log.info("history of %s fetched on demand: %s entries received, %s new", contact_id,
             summary.get("received"), summary.get("added"))


def _fetch_done(
    fetches: dict[str, asyncio.Task[dict[str, Any]]], contact_id: str,
    task: asyncio.Task[dict[str, Any]],
) -> None:
    if fetches.get(contact_id) is task:
        del fetches[contact_id]
    if not task.cancelled():
        # Retrieved here, so a fetch whose requests all gave up waiting is not reported as
        # "never retrieved"; any request still waiting answers for the error itself.
        task.exception()


def _masked(message: str, settings: WebSettings) -> str:
    """A remote's error text, short and with none of the web process's secrets in it."""
    from worker.base.logs import Redactor

    return Redactor.for_settings(settings).one_line(message, 160)


def treazure_fetcher(app: web.Application, parts: Parts) -> HistoryFetcher:
    """The real fetcher: history.fetch_history on the app's clients, storing in its store."""
    parts = dataclasses.replace(parts, store=app[STORE])

    async def fetch(contact_id: str) -> dict[str, Any]:
        return await history.fetch_history(parts, contact_id)

    return fetch


# -- GET /health ---------------------------------------------------------------------------

async def health(request: web.Request) -> web.Response:
    app = request.app
    redis, database = await asyncio.gather(_check_redis(app), _check_database(app))
    ok = redis == database == "ok"
    return web.json_response({"status": "ok" if ok else "error", "redis": redis,
                              "database": database}, status=200 if ok else 503)


async def _check_redis(app: web.Application) -> str:
    try:
        await asyncio.wait_for(app[REDIS].ping(), CHECK_TIMEOUT)
    except Exception as exc:
        return _short(exc, app[SETTINGS])
    return "ok"


async def _check_database(app: web.Application) -> str:
    def select_one() -> None:
        with app[STORE].engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    try:
        await asyncio.wait_for(blocking(app, select_one), CHECK_TIMEOUT)
    except Exception as exc:
        return _short(exc, app[SETTINGS])
    return "ok"


def _short(exc: BaseException, settings: WebSettings) -> str:
    """One line naming the error; any password from a configured URL is masked."""
    cause = getattr(exc, "orig", None) or exc  # SQLAlchemy: the driver's own message
    lines = str(cause).strip().splitlines()
    message = f"{type(cause).__name__}: {lines[0]}" if lines else type(cause).__name__
    for url in (settings.REDIS_URL, settings.DATABASE_URL):
        password = urlsplit(url).password
        if password:
            message = message.replace(password, "***")
    return message[:200]


# -- GET /metrics --------------------------------------------------------------------------

async def metrics(request: web.Request) -> web.Response:
    """Prometheus metrics, read at each scrape; a source that is down is reported in them."""
    app = request.app
    body = await blocking(app, scrape, app[STORE], app[SETTINGS].REDIS_URL)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# -- the application -----------------------------------------------------------------------

def _webhook(settings: WebSettings) -> Webhook:
    try:
        return Webhook(settings.WEBHOOK_SECRET.get_secret_value())
    except Exception:  # never chained or echoed: the message could carry the secret
        raise ConfigError("configuration error: WEBHOOK_SECRET is malformed: the part after "
                          "whsec_ must be non-empty base64") from None


async def _resources(app: web.Application) -> AsyncIterator[None]:
    url = app[SETTINGS].REDIS_URL
    app[REDIS] = Redis.from_url(url, socket_timeout=CHECK_TIMEOUT,
                                socket_connect_timeout=CHECK_TIMEOUT)
    yield
    await app[REDIS].aclose()
    app[EXECUTOR].shutdown(wait=True)


async def _resender(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.ensure_future(_resend_unsent(app))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _treazure(app: web.Application) -> AsyncIterator[None]:
    """One set of Treazure clients for the app's lifetime (they belong to its loop)."""
    async with remote(app[SETTINGS]) as parts:
        app[HISTORY_FETCHER] = treazure_fetcher(app, parts)
        yield
        await _stop_fetches(app)


async def _stop_fetches(app: web.Application) -> None:
    """Background fetches are cancelled before the clients they use close."""
    tasks = list(app[FETCHES].values())
    for task in tasks:
        task.cancel()
    with contextlib.suppress(BaseException):
        await asyncio.gather(*tasks, return_exceptions=True)


async def _injected_fetcher(app: web.Application) -> AsyncIterator[None]:
    yield
    await _stop_fetches(app)


def create_app(
    settings: WebSettings, store: Store | None = None, enqueue: Enqueue | None = None,
    history_fetcher: HistoryFetcher | None = None,
    fetch_timeout: float = HISTORY_FETCH_TIMEOUT,
) -> web.Application:
    """`history_fetcher` stands in for Treazure in tests: contact id -> summary, raising
    history.UnknownContact or http.RemoteError as history.fetch_history does."""
    app = web.Application()
    app[SETTINGS] = settings
    app[WEBHOOK] = _webhook(settings)
    app[STORE] = store if store is not None else prepare_store(settings.DATABASE_URL)
    app[LEDGER] = Ledger(app[STORE])
    app[HISTORY] = HistoryStore(app[STORE])
    app[ENQUEUE] = enqueue if enqueue is not None else celery_enqueue(settings)
    app[EXECUTOR] = ThreadPoolExecutor(max_workers=4, thread_name_prefix="pointsync-web")
    app[FETCH_TIMEOUT] = fetch_timeout
    app[FETCHES] = {}
    app[UNSENT] = Unsent()
    app.cleanup_ctx.append(_resources)
    app.cleanup_ctx.append(_resender)
    if history_fetcher is not None:
        app[HISTORY_FETCHER] = history_fetcher
        app.cleanup_ctx.append(_injected_fetcher)
    else:
        app.cleanup_ctx.append(_treazure)
    app.router.add_post("/webhooks/engage", engage_webhook)
    app.router.add_get("/contacts/{contact_id}/points-history", points_history)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    return app


def main() -> None:
    try:
        settings = get_web_settings()
        configure_logging(settings.LOG_FORMAT, settings.LOG_LEVEL)
        app = create_app(settings)
    except ConfigError as exc:
        exit_on_config_error(exc)
    url = f"http://{settings.WEB_HOST}:{settings.PORT}"
    web.run_app(app, host=settings.WEB_HOST, port=settings.PORT, access_log=None,
                print=lambda _banner: log.info("pointsync web listening on %s", url))


if __name__ == "__main__":
    main()
