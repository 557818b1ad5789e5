"""GET /contacts/{contact_id}/points-history: a contact's stored points history, behind
an `apikey`.

A contact never fetched is fetched from Treazure first, through one set of clients kept
for the app's lifetime; concurrent requests for the same contact share one fetch, and a
fetch that outlasts the request's patience goes on in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from worker.base.arguments import InvalidArgument
from worker.base.http import RemoteError
from worker.base.point_request import validate_contact_id
from worker.base.settings import WebSettings
from worker.base.signatures import same_secret
from worker.faces.web.context import (
    HISTORY,
    SETTINGS,
    STORE,
    Refused,
    blocking,
    masked,
    refuse,
    short_error,
)
from worker.flows import history
from worker.flows.history import UnknownContact
from worker.flows.parts import Parts
from worker.store.history import MalformedHistory

log = logging.getLogger("pointsync.web")

HISTORY_FETCH_TIMEOUT = 25.0  # seconds a history request waits for Treazure (the fetch goes on)
DEFAULT_OFFSET, DEFAULT_COUNT, MAX_COUNT = 0, 100, 1000
API_KEY_REFUSED = "apikey: missing or wrong"
UNKNOWN_CONTACT = "contact_id: unknown contact"

# contact id -> the fetch's summary; raises history.UnknownContact or http.RemoteError
HistoryFetcher = Callable[[str], Awaitable[dict[str, Any]]]
HISTORY_FETCHER: web.AppKey[HistoryFetcher] = web.AppKey("history_fetcher")
FETCH_TIMEOUT = web.AppKey("fetch_timeout", float)
FETCHES: web.AppKey[dict[str, asyncio.Task[dict[str, Any]]]] = web.AppKey("fetches")


async def points_history(request: web.Request) -> web.Response:
    app = request.app
    try:
        _check_api_key(request.headers, app[SETTINGS])
        try:
            contact_id = validate_contact_id(request.match_info["contact_id"])
        except InvalidArgument as exc:
            refuse(400, str(exc))
        offset = _query_int(request.query, "offset", DEFAULT_OFFSET, 0, None)
        count = _query_int(request.query, "count", DEFAULT_COUNT, 1, MAX_COUNT)
        try:
            if await blocking(app, app[HISTORY].fetched, contact_id) is None:
                await _fetch_once(app, contact_id)
            items, total = await blocking(app, app[HISTORY].page, contact_id, offset, count)
        except SQLAlchemyError as exc:
            log.warning("history of %s: database error: %s", contact_id,
                        short_error(exc, app[SETTINGS]))
            refuse(503, "database: unavailable, try again later")
    except Refused as refused:
        if refused.status >= 500:
            log.warning("history request failed (%s): %s", refused.status, refused.error)
        return web.json_response({"error": refused.error}, status=refused.status)
    return web.json_response(history_answer(items, total, offset))


def history_answer(items: list[dict[str, Any]], total: int, offset: int) -> dict[str, Any]:
    """The answer's shape, as Engage's own list endpoints have it (the CLI prints it too)."""
    return {"items": items, "totalCount": total, "offset": offset, "count": len(items)}


def _check_api_key(headers: Mapping[str, str], settings: WebSettings) -> None:
    # An empty key (configured or sent) never matches. Neither is ever logged or echoed.
    if not same_secret(headers.get("apikey", ""), settings.WEB_API_KEY.get_secret_value()):
        refuse(401, API_KEY_REFUSED)


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
        refuse(400, f"{name}: must be a whole number {rule}, got {shown!r}")
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
        refuse(504, f"Treazure: no answer within {app[FETCH_TIMEOUT]:g} s; "
                    "the history is still being fetched, try again shortly")
    except RemoteError as exc:
        refuse(502, f"Treazure: {masked(exc.reason, app[SETTINGS])}")
    except MalformedHistory:
        refuse(502, "Treazure: sent a history entry without a valid dateTime")
    except UnknownContact:  # Treazure answered 404
        refuse(404, UNKNOWN_CONTACT)
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


def treazure_fetcher(app: web.Application, parts: Parts) -> HistoryFetcher:
    """The real fetcher: history.fetch_history on the app's clients, storing in its store."""
    parts = dataclasses.replace(parts, store=app[STORE])

    async def fetch(contact_id: str) -> dict[str, Any]:
        return await history.fetch_history(parts, contact_id)

    return fetch


async def stop_fetches(app: web.Application) -> None:
    """Background fetches are cancelled before the clients they use close."""
    tasks = list(app[FETCHES].values())
    for task in tasks:
        task.cancel()
    with contextlib.suppress(BaseException):
        await asyncio.gather(*tasks, return_exceptions=True)
