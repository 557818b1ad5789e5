"""Web tests: the real app on a real SQLite file, served by aiohttp's test server.

Deliveries carry real Svix signatures; the Celery send is a stub that records its calls.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.support.web import ENV, EnqueueStub
from worker.base import settings as settings_module
from worker.base.settings import WebSettings
from worker.faces.runtime import prepare_store
from worker.faces.web.app import create_app
from worker.store.database import Store
from worker.store.ledger import Ledger


@pytest.fixture
def make_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> Iterator[Callable[..., WebSettings]]:
    """Settings from a clean environment (no caller variable or `.env` leaks in)."""
    monkeypatch.chdir(tmp_path)
    for name in WebSettings.model_fields:
        monkeypatch.delenv(name, raising=False)
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)

    def make(**overrides: str) -> WebSettings:
        for name, value in overrides.items():
            monkeypatch.setenv(name, value)
        settings_module.clear_cache()
        return settings_module.get_web_settings()

    yield make
    settings_module.clear_cache()


@pytest.fixture
def settings(make_settings: Callable[..., WebSettings], sqlite_url: str) -> WebSettings:
    return make_settings(DATABASE_URL=sqlite_url)


@pytest.fixture
def store(settings: WebSettings) -> Store:
    return prepare_store(settings.DATABASE_URL)


@pytest.fixture
def ledger(store: Store) -> Ledger:
    return Ledger(store)


@pytest.fixture
def enqueue() -> EnqueueStub:
    return EnqueueStub()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Any]]:
    """Start an app on a test server; every client started here is closed afterwards."""
    clients: list[TestClient] = []

    async def start(
        settings: WebSettings, store: Store | None = None, enqueue: Any = None,
        **options: Any,
    ) -> TestClient:
        client = TestClient(TestServer(create_app(settings, store, enqueue, **options)))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


@pytest.fixture
async def client(
    serve: Callable[..., Any], settings: WebSettings, store: Store, enqueue: EnqueueStub
) -> TestClient:
    return await serve(settings, store, enqueue)
