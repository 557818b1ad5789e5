"""GET /health against a real Redis (db 11) and the real database, and with each one down."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.support.web import CLOSED_REDIS
from worker.base.settings import WebSettings
from worker.store.database import Store
from worker.store.engine import make_engine


async def test_health_ok_with_redis_and_database_up(
    serve: Callable[..., Any], settings: WebSettings, store: Store
) -> None:
    client = await serve(settings, store, lambda kwargs: None)
    response = await client.get("/health")

    assert response.status == 200
    assert await response.json() == {"status": "ok", "redis": "ok", "database": "ok"}


async def test_health_503_names_redis_when_it_is_down(
    serve: Callable[..., Any], make_settings: Callable[..., WebSettings], sqlite_url: str,
    store: Store,
) -> None:
    settings = make_settings(DATABASE_URL=sqlite_url, REDIS_URL=CLOSED_REDIS)
    client = await serve(settings, store, lambda kwargs: None)
    response = await client.get("/health")

    assert response.status == 503
    answer = await response.json()
    assert (answer["status"], answer["database"]) == ("error", "ok")
    assert answer["redis"].startswith("ConnectionError: ")
    assert "6399" in answer["redis"]


async def test_health_503_names_the_database_when_it_is_unreachable(
    serve: Callable[..., Any], settings: WebSettings, tmp_path
) -> None:
    missing = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'x.db'}"
    client = await serve(settings, Store(make_engine(missing)), lambda kwargs: None)
    response = await client.get("/health")

    assert response.status == 503
    answer = await response.json()
    assert (answer["status"], answer["redis"]) == ("error", "ok")
    assert answer["database"] == "OperationalError: unable to open database file"


async def test_health_never_shows_a_redis_password(
    serve: Callable[..., Any], make_settings: Callable[..., WebSettings], sqlite_url: str,
    store: Store,
) -> None:
    settings = make_settings(DATABASE_URL=sqlite_url,
                             REDIS_URL="redis://:hunter2-Pa55@127.0.0.1:6399/0")
    client = await serve(settings, store, lambda kwargs: None)
    response = await client.get("/health")

    assert response.status == 503
    assert "hunter2-Pa55" not in await response.text()
