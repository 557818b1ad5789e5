"""POST /webhooks/toggle and POST /webhooks/nector: the sources' signed events, recorded
before they are answered, then relayed (worker/flows/relays).

Each route is added only where its relay is configured. The signature is checked in
constant time on the raw body before anything is parsed or recorded (401, nothing kept);
a genuine body that is not an event is 400; the event and its deliveries are committed
before the `200`; a repeat answers `200` and records nothing; a database that cannot record
is `503`, so the source tries again. The delivery task is queued after the answer is
decided, on a thread of its own and never awaited: with Redis down the answer stays fast,
and the sweep delivers what was not queued.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from worker.base.settings import WebSettings
from worker.base.signatures import BadSignature, SignatureVerifier
from worker.faces.web.context import SETTINGS, STORE, Refused, blocking, refuse, short_error
from worker.faces.web.queueing import task_sender
from worker.flows.relays.receive import NECTOR, TOGGLE, Unreadable, receive
from worker.systems.nector.webhooks import NectorVerifier
from worker.systems.toggle.webhooks import ToggleVerifier

log = logging.getLogger("pointsync.web")

TASK = "pointsync.relay_subject"
# Queued sends not finished yet beyond which new ones are skipped (the sweep has them).
MAX_PENDING = 200

# `pointsync.relay_subject` kwargs -> anything (the send's handle, unread)
RelayEnqueue = Callable[[dict[str, str]], object]
RELAY_ENQUEUE: web.AppKey[RelayEnqueue] = web.AppKey("relay_enqueue")
RELAY_VERIFIERS: web.AppKey[Mapping[str, SignatureVerifier]] = web.AppKey("relay_verifiers")
RELAY_QUEUE = web.AppKey("relay_queue", ThreadPoolExecutor)
RELAY_PENDING: web.AppKey[set[Future[object]]] = web.AppKey("relay_pending")


def add_relay_routes(app: web.Application, enqueue: RelayEnqueue | None = None) -> None:
    """The receivers of the relays configured in the app's settings (none: nothing added).
    Tests may replace RELAY_ENQUEUE before the app starts."""
    settings = app[SETTINGS]
    verifiers: dict[str, SignatureVerifier] = {}
    if settings.toggle_relay_enabled and settings.TOGGLE_WEBHOOK_SECRET is not None:
        verifiers[TOGGLE] = ToggleVerifier(settings.TOGGLE_WEBHOOK_SECRET.get_secret_value())
        app.router.add_post("/webhooks/toggle", toggle_webhook)
    if settings.nector_relay_enabled and settings.NECTOR_WEBHOOK_SECRET is not None:
        verifiers[NECTOR] = NectorVerifier(settings.NECTOR_WEBHOOK_SECRET.get_secret_value())
        app.router.add_post("/webhooks/nector", nector_webhook)
    if not verifiers:
        return
    app[RELAY_VERIFIERS] = verifiers
    app[RELAY_ENQUEUE] = enqueue or celery_relay_enqueue(settings)
    app[RELAY_QUEUE] = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pointsync-relay")
    app[RELAY_PENDING] = set()
    app.cleanup_ctx.append(_queue_lifetime)


async def _queue_lifetime(app: web.Application) -> AsyncIterator[None]:
    yield
    app[RELAY_QUEUE].shutdown(wait=False, cancel_futures=True)


async def toggle_webhook(request: web.Request) -> web.Response:
    return await _receive(request, TOGGLE)


async def nector_webhook(request: web.Request) -> web.Response:
    return await _receive(request, NECTOR)


async def _receive(request: web.Request, source: str) -> web.Response:
    app = request.app
    body = await request.read()
    try:
        try:
            app[RELAY_VERIFIERS][source].verify(body, request.headers)
        except BadSignature as exc:
            refuse(401, str(exc))
        try:
            received = await blocking(app, receive, app[STORE], source, body, request.headers)
        except Unreadable as exc:
            refuse(400, str(exc))
        except SQLAlchemyError as exc:
            log.warning("%s webhook: database error: %s", source,
                        short_error(exc, app[SETTINGS]))
            refuse(503, "database: unavailable, try again later")
    except Refused as refused:
        log.warning("%s webhook refused (%s): %s", source, refused.status, refused.error)
        return web.json_response({"error": refused.error}, status=refused.status)
    log.info("%s webhook %s (%s): %s", source, received.event_id, received.topic,
             "recorded" if received.recorded else "a repeat, nothing recorded")
    if received.recorded:
        _queue(app, {"source": source, "subject": received.subject}, received.event_id)
    return web.json_response(received.as_dict)


def _queue(app: web.Application, kwargs: dict[str, str], event_id: str) -> None:
    """Queue the subject's delivery on the relay's own threads, not waiting for it."""
    pending = app[RELAY_PENDING]
    source = kwargs["source"]
    if len(pending) >= MAX_PENDING:
        log.warning("%s webhook %s: recorded; too many sends to the broker pending, the "
                    "sweep delivers it", source, event_id)
        return
    future = app[RELAY_QUEUE].submit(app[RELAY_ENQUEUE], kwargs)
    pending.add(future)
    settings = app[SETTINGS]

    def done(sent: Future[object]) -> None:
        pending.discard(sent)
        if not sent.cancelled() and (exc := sent.exception()) is not None:
            log.warning("%s webhook %s: recorded, but queueing its delivery failed (%s); "
                        "the sweep delivers it", source, event_id, short_error(exc, settings))

    future.add_done_callback(done)


async def settled(app: web.Application) -> None:
    """Wait for every pending send (tests; a graceful stop)."""
    await asyncio.gather(*(asyncio.wrap_future(f) for f in list(app.get(RELAY_PENDING, ()))),
                         return_exceptions=True)


def celery_relay_enqueue(settings: WebSettings) -> RelayEnqueue:
    """Queue pointsync.relay_subject for recorded deliveries (the rows are the outcome)."""
    return task_sender(settings, TASK)
