"""Unit-test fixtures: settings from a clean environment, fakeredis, a recording sleep."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

import fakeredis
import pytest

from tests.support.unit import BASE_ENV, SleepRecorder
from worker.base import settings as settings_module
from worker.base.settings import Settings, WebSettings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[pytest.MonkeyPatch]:
    """No setting from the caller's environment or a `.env` file leaks into a test."""
    monkeypatch.chdir(tmp_path)
    for name in WebSettings.model_fields:
        monkeypatch.delenv(name, raising=False)
    settings_module.clear_cache()
    yield monkeypatch
    settings_module.clear_cache()


@pytest.fixture
def env(clean_env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name, value in BASE_ENV.items():
        clean_env.setenv(name, value)
    return clean_env


@pytest.fixture
def make_settings(env: pytest.MonkeyPatch) -> Callable[..., Settings]:
    def make(**overrides: object) -> Settings:
        for name, value in overrides.items():
            env.setenv(name, str(value))
        settings_module.clear_cache()
        return settings_module.get_settings()

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def redis_server() -> fakeredis.FakeServer:
    """One Redis server per test; several clients on it stand for several processes."""
    return fakeredis.FakeServer()


@pytest.fixture
async def redis(redis_server: fakeredis.FakeServer) -> AsyncIterator[fakeredis.FakeAsyncRedis]:
    client = fakeredis.FakeAsyncRedis(server=redis_server)
    yield client
    await client.aclose()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> SleepRecorder:
    """asyncio.sleep that records the delay asked for and returns at once."""
    recorder = SleepRecorder()
    monkeypatch.setattr(asyncio, "sleep", recorder)
    return recorder
