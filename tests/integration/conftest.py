"""Integration fixtures: real Redis, the simulators over HTTP, real Celery processes."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from sims.harness import (
    CeleryProcess,
    Simulators,
    WebProcess,
    start_celery,
    start_simulators,
    stop,
)
from tests.support.integration import QUIET_WORKER, REDIS_URL, Sim
from tests.support.redis_server import RedisServer
from tests.support.relays import RelaySims, start_relay_web
from tests.support.toggle_control import Toggle
from worker.faces.runtime import prepare_store
from worker.store.database import Store


@pytest.fixture(scope="session")
def sims() -> Iterator[Simulators]:
    simulators = start_simulators()
    yield simulators
    stop(simulators.proc)


@pytest.fixture
def sim(sims: Simulators) -> Iterator[Sim]:
    control = Sim(sims)
    control.post("reset")
    yield control
    control.http.close()


@pytest.fixture
def redis_url() -> str:
    redis.Redis.from_url(REDIS_URL).flushdb()
    return REDIS_URL


@pytest.fixture
def worker_env(sims: Simulators, redis_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        **sims.env(),
        "REDIS_URL": redis_url,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'pointsync.db'}",
        "SYNC_LOCK_TTL_SECONDS": "3",
        "HTTP_MAX_BACKOFF_SECONDS": "0.5",
    }


@pytest.fixture
def store(worker_env: dict[str, str]) -> Store:
    return prepare_store(worker_env["DATABASE_URL"])


@pytest.fixture
def start_worker(worker_env: dict[str, str], tmp_path: Path
                 ) -> Iterator[Callable[..., CeleryProcess]]:
    started: list[CeleryProcess] = []

    def start(kind: str = "worker", concurrency: int = 2, **overrides: str) -> CeleryProcess:
        args = ["--concurrency", str(concurrency), "-n", f"it-{uuid.uuid4().hex[:8]}@%h",
                *QUIET_WORKER] if kind == "worker" else []
        process = start_celery(kind, {**worker_env, **overrides},
                               tmp_path / f"{kind}-{len(started)}.log", args)
        started.append(process)
        return process

    yield start
    for process in started:
        # The test is over and the next one starts on an emptied Redis and a database of
        # its own: nothing the worker would finish in a warm shutdown is looked at again.
        process.kill()


@pytest.fixture
def client(redis_url: str) -> Iterator[Celery]:
    """A Celery client on the same broker, as `celery call` or the CLI would be."""
    app = Celery("it-client", broker=redis_url, backend=redis_url)
    app.conf.broker_connection_retry_on_startup = True
    yield app
    app.close()


@pytest.fixture
def toggle(sims: Simulators) -> Iterator[Toggle]:
    """The Toggle simulator's control API, the simulator reset."""
    control = Toggle(sims.toggle)
    control.post("reset")
    yield control
    control.http.close()


@pytest.fixture
def relay_sims(sims: Simulators) -> Iterator[RelaySims]:
    """The Atreemo and Contlo simulators' control, reset for the test."""
    control = RelaySims(sims.atreemo, sims.contlo)
    control.reset()
    yield control
    control.http.close()


@pytest.fixture
def web(worker_env: dict[str, str], store: Store, tmp_path: Path) -> Iterator[WebProcess]:
    """The web process with both relays configured (a module may define its own)."""
    process = start_relay_web(worker_env, tmp_path / "web.log")
    yield process
    process.stop(timeout=5)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, that it may stop and start again (an outage)."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()
