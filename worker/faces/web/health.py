"""GET /health: Redis and the database, each answering within CHECK_TIMEOUT."""

from __future__ import annotations

import asyncio

from aiohttp import web
from sqlalchemy import text

from worker.faces.web.context import REDIS, SETTINGS, STORE, blocking, short_error

CHECK_TIMEOUT = 2.0  # seconds, per health check


async def health(request: web.Request) -> web.Response:
    app = request.app
    redis, database = await asyncio.gather(check_redis(app), check_database(app))
    ok = redis == database == "ok"
    return web.json_response({"status": "ok" if ok else "error", "redis": redis,
                              "database": database}, status=200 if ok else 503)


async def check_redis(app: web.Application) -> str:
    """"ok", or one line saying why Redis did not answer."""
    try:
        await asyncio.wait_for(app[REDIS].ping(), CHECK_TIMEOUT)
    except Exception as exc:
        return short_error(exc, app[SETTINGS])
    return "ok"


async def check_database(app: web.Application) -> str:
    def select_one() -> None:
        with app[STORE].engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    try:
        await asyncio.wait_for(blocking(app, select_one), CHECK_TIMEOUT)
    except Exception as exc:
        return short_error(exc, app[SETTINGS])
    return "ok"
