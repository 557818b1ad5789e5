"""What both destination simulators share: their state, the request wrapper (faults, then
authentication, then the rate limit, then the handler) and the `/_sim/` control API."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from sims.checks import checked, integer, text
from sims.control_api import Controls, add_shared_routes
from sims.endpoint import control_errors
from sims.faults import Faults, checked_fault
from sims.ratelimit import RateLimiter, SlidingSecond
from sims.responses import drop_connection, fault_response, json_response

# status: answer `status`, record nothing; latency: wait `seconds`, then serve; drop: close
# without answering or recording; drop_after_apply: record, then close instead of answering.
KINDS = frozenset({"status", "latency", "drop", "drop_after_apply"})
_CONFIG_CHECKS = {"rate_limit": integer(1), "credential": text}

Handler = Callable[[web.Request, "Destination"], Awaitable[web.Response]]
# Answers a request it refuses (bad signature or key), or returns None.
Check = Callable[[web.Request, bytes, "Destination"], web.Response | None]


@dataclass
class Destination:
    """One simulated destination: its credential, its limit, its faults and its books."""

    name: str
    credential: str  # Atreemo: the signing secret; Contlo: the API key
    rate_limit: int  # requests per sliding second before 429
    clock: Callable[[], float] = time.monotonic
    faults: Faults = field(default_factory=Faults)
    limiter: RateLimiter = field(default_factory=RateLimiter)
    received: list[dict[str, Any]] = field(default_factory=list)  # accepted, arrival order
    requests: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    throttled: int = 0
    unauthorized: int = 0
    peak_per_second: int = 0
    _window: SlidingSecond = field(default_factory=SlidingSecond)
    _defaults: tuple[str, int] = ("", 0)

    def __post_init__(self) -> None:
        self._defaults = (self.credential, self.rate_limit)

    def reset(self) -> None:
        self.credential, self.rate_limit = self._defaults
        self.faults.clear()
        self.limiter = RateLimiter()
        self.received.clear()
        self.reset_stats()

    def reset_stats(self) -> None:
        self.requests = self.throttled = self.unauthorized = self.peak_per_second = 0
        self.answers.clear()
        self._window = SlidingSecond()

    def arrived(self) -> float:
        now = self.clock()
        self.requests += 1
        self._window.add(now)
        self.peak_per_second = max(self.peak_per_second, self._window.count(now))
        return now

    def record(self, entry: dict[str, Any]) -> None:
        self.received.append({"seq": len(self.received) + 1, "received_at": time.time(),
                              **entry})

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "accepted": len(self.received),
            "answers": dict(self.answers),
            "throttled": self.throttled,
            "unauthorized": self.unauthorized,
            "peak_per_second": self.peak_per_second,
            "rate_limit": self.rate_limit,
            "faults_pending": self.faults.pending(),
        }


DESTINATION = web.AppKey("destination", Destination)


def endpoint(handler: Handler, check: Check, throttled: Callable[[], web.Response]) -> Callable[
        [web.Request], Awaitable[web.StreamResponse]]:
    async def serve(request: web.Request) -> web.StreamResponse:
        sim = request.app[DESTINATION]
        now = sim.arrived()
        body = await request.read()
        fault = sim.faults.take(sim.name)
        if fault is not None and fault.kind == "latency":
            await asyncio.sleep(fault.seconds)
        if fault is not None and fault.kind == "status":
            sim.answers[str(fault.status)] += 1
            return fault_response(fault)
        if fault is not None and fault.kind == "drop":
            sim.answers["drop"] += 1
            return drop_connection(request)
        response = check(request, body, sim)
        if response is not None:
            sim.unauthorized += 1
        elif not sim.limiter.admit(sim.name, now, sim.rate_limit):
            sim.throttled += 1
            response = throttled()
        else:
            response = await handler(request, sim)
        if fault is not None and fault.kind == "drop_after_apply":
            sim.answers["drop"] += 1
            return drop_connection(request)
        sim.answers[str(response.status)] += 1
        return response

    return serve


def destination_app(state: Destination, path: str, handler: Handler, check: Check,
                    throttled: Callable[[], web.Response], records_path: str
                    ) -> web.Application:
    """A destination simulator's app: its endpoint at `path`, the control API, and what it
    accepted at `records_path`."""
    app = web.Application(middlewares=[control_errors])
    app[DESTINATION] = state
    app.router.add_post(path, endpoint(handler, check, throttled))
    add_control_routes(app, records_path)
    return app


def _sim(request: web.Request) -> Destination:
    return request.app[DESTINATION]


def _configure(sim: Destination, changes: dict[str, Any]) -> None:
    checked_changes = checked(changes, _CONFIG_CHECKS)
    sim.rate_limit = checked_changes.get("rate_limit", sim.rate_limit)
    sim.credential = checked_changes.get("credential", sim.credential)


CONTROLS = Controls(
    state=_sim,
    parse_fault=lambda sim, spec: (sim.name, checked_fault(spec, KINDS)),
    stats=Destination.stats,
    reset_stats=Destination.reset_stats,
    config=lambda sim: {"rate_limit": sim.rate_limit, "credential": sim.credential},
    configure=_configure,
)


def add_control_routes(app: web.Application, records_path: str) -> None:
    """The shared `/_sim/` routes (config: {"rate_limit", "credential"}) and the records."""

    async def records(request: web.Request) -> web.Response:
        received = _sim(request).received
        return json_response({"count": len(received), "items": received})

    add_shared_routes(app, CONTROLS)
    app.router.add_get(records_path, records)
