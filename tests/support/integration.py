"""What integration tests share: the simulators' control API, the test Redis, waiting."""

from __future__ import annotations

import ast
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from sims.harness import CeleryProcess, Simulators

# A database index of the machine's Redis for these tests alone; emptied before each test.
REDIS_URL = os.environ.get("IT_REDIS_URL", "redis://127.0.0.1:6379/14")
# Test workers neither mingle (a 1 s wait for neighbours' revoked ids at every start) nor
# gossip: no test revokes a task or reads another worker's events.
QUIET_WORKER = ["--without-mingle", "--without-gossip"]


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


_SUCCEEDED = re.compile(
    r"^(?P<at>\S+) INFO celery\.app\.trace.*?: Task (?P<name>[\w.]+)\[(?P<id>[\w-]+)\] "
    r"succeeded in [\d.e-]+s: (?P<result>.*)$")


@dataclass(frozen=True)
class LoggedResult:
    """A task's outcome as its worker logged it (for tasks that keep no result in Redis)."""

    task_id: str
    done_at: datetime
    result: Any


def logged_results(log: Path, task_name: str) -> list[LoggedResult]:
    """Every `task_name` that succeeded, in the order the worker's log shows them."""
    found = []
    for line in log.read_text().splitlines():
        match = _SUCCEEDED.match(line)
        if match and match["name"] == task_name:
            found.append(LoggedResult(match["id"], datetime.fromisoformat(match["at"]),
                                      ast.literal_eval(match["result"])))
    return found


def bookings(sim: Sim, contact: str) -> int:
    """Movements on a Treazure account besides its opening balance."""
    response = sim.http.get(f"{sim.urls.treazure}/_sim/treazure/account/{contact}")
    return int(response.json()["history_length"]) - 1


def only_pool_child(worker: CeleryProcess) -> int:
    """The pid of a one-process worker's pool child (to kill it, not the worker)."""
    children = psutil.Process(worker.proc.pid).children()
    assert len(children) == 1, children
    return children[0].pid
