"""What integration tests share: the simulators' control API, the test Redis, waiting."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import httpx

from worker.harness import Simulators

# A database index of the machine's Redis for these tests alone; emptied before each test.
REDIS_URL = os.environ.get("IT_REDIS_URL", "redis://127.0.0.1:6379/14")


class Sim:
    """The control API of the simulators."""

    def __init__(self, sims: Simulators) -> None:
        self.urls = sims
        self.http = httpx.Client(base_url=sims.engage, timeout=60)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self.http.post(f"/_sim/{path}", json=body or {})
        response.raise_for_status()
        return response.json() if response.content else None

    def stats(self) -> dict[str, Any]:
        return self.http.get("/_sim/stats").json()

    def compare(self) -> dict[str, Any]:
        return self.post("compare")


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait for an observable event (a counter, a row, a key), polling it."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
