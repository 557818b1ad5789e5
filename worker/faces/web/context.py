"""What every route of the web process shares: the app's keys, the thread pool for
blocking calls, the refusal a handler raises, and error text safe to show."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

from aiohttp import web
from redis.asyncio import Redis

from worker.base.logs import Redactor
from worker.base.settings import WebSettings
from worker.store.database import Store
from worker.store.history import HistoryStore
from worker.store.ledger import Ledger

_T = TypeVar("_T")

SETTINGS = web.AppKey("settings", WebSettings)
STORE = web.AppKey("store", Store)
LEDGER = web.AppKey("ledger", Ledger)
HISTORY = web.AppKey("history", HistoryStore)
EXECUTOR = web.AppKey("executor", ThreadPoolExecutor)
REDIS = web.AppKey("redis", Redis)


class Refused(Exception):
    """A request answered with `status` and `{"error": error}`."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status, self.error = status, error


def refuse(status: int, error: str) -> NoReturn:
    raise Refused(status, error)


async def blocking(app: web.Application, fn: Callable[..., _T], *args: Any) -> _T:
    """Run a blocking call (database, broker) in the app's thread pool."""
    return await asyncio.get_running_loop().run_in_executor(app[EXECUTOR], partial(fn, *args))


def short_error(exc: BaseException, settings: WebSettings) -> str:
    """One line naming the error; any password from a configured URL is masked."""
    cause = getattr(exc, "orig", None) or exc  # SQLAlchemy: the driver's own message
    lines = str(cause).strip().splitlines()
    message = f"{type(cause).__name__}: {lines[0]}" if lines else type(cause).__name__
    for url in (settings.REDIS_URL, settings.DATABASE_URL):
        password = urlsplit(url).password
        if password:
            message = message.replace(password, "***")
    return message[:200]


def masked(message: str, settings: WebSettings) -> str:
    """A remote's error text, short and with none of the web process's secrets in it."""
    return Redactor.for_settings(settings).one_line(message, 160)
