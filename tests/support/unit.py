"""Constants and helpers shared by the unit tests (imported by conftest and test modules)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx

TREAZURE = "https://acme.posengine.test.cloud"
ENGAGE = "https://acme.voyado.test"
CLIENT_SECRET = "tz-S3CRET-4f1d9c"
API_KEY = "eng-K3Y-77ab20"

BASE_ENV = {
    "TREAZURE_BASE_URL": TREAZURE,
    "TREAZURE_CLIENT_ID": "pointsync-client",
    "TREAZURE_CLIENT_SECRET": CLIENT_SECRET,
    "TREAZURE_LOYALTY_ID": "points",
    "ENGAGE_BASE_URL": ENGAGE,
    "ENGAGE_API_KEY": API_KEY,
    "HTTP_MAX_BACKOFF_SECONDS": "0.01",
    "HTTP_MAX_ATTEMPTS": "4",
}

_REAL_SLEEP = asyncio.sleep


class SleepRecorder:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float, result: object = None) -> object:
        self.delays.append(delay)
        await _REAL_SLEEP(0)
        return result


class RecordingLimiter:
    """A rate limiter that notes each slot taken, so a test sees it came before the request."""

    def __init__(self, events: list[str]) -> None:
        self.events = events

    async def acquire(self) -> None:
        self.events.append("limiter")


def json_response(status: int, body: object, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def mocked_http(router: object, base_url: str) -> httpx.AsyncClient:
    """An httpx client whose requests are answered by a respx router (no sockets, no TLS)."""
    return httpx.AsyncClient(
        base_url=base_url, transport=httpx.MockTransport(router.async_handler)  # type: ignore[attr-defined]
    )


def cli_database(env: Any, tmp_path: Any, **variables: str) -> Iterator[str]:
    """A fresh SQLite file as DATABASE_URL for CLI tests, with this test's engines only;
    `yield from` it in a fixture."""
    from worker.base import settings as settings_module
    from worker.faces import runtime

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env.setenv("DATABASE_URL", url)
    for name, value in variables.items():
        env.setenv(name, value)
    env.setattr(runtime, "_stores", {})
    settings_module.clear_cache()
    yield url
    for store in runtime._stores.values():
        store.engine.dispose()
    settings_module.clear_cache()
