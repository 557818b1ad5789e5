"""The `/_sim/` routes every simulator's control API has, written once: reset, config (read
and change), faults (queue one, clear all) and stats (read, reset). Each simulator says how
its own state does each (`Controls`) and adds its own routes besides."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from aiohttp import web

from sims.faults import Fault, Faults
from sims.inputs import read_object
from sims.responses import json_response


class Controlled(Protocol):
    faults: Faults

    def reset(self) -> None: ...


State = TypeVar("State", bound=Controlled)


@dataclass(frozen=True)
class Controls(Generic[State]):
    """How one simulator's state answers the shared routes."""

    state: Callable[[web.Request], State]
    parse_fault: Callable[[State, dict[str, Any]], tuple[str, Fault]]  # (target, fault)
    stats: Callable[[State], dict[str, Any]]
    reset_stats: Callable[[State], None]
    config: Callable[[State], dict[str, Any]]
    configure: Callable[[State, dict[str, Any]], None]  # checks the changes (400) first


def add_shared_routes(app: web.Application, controls: Controls[State]) -> None:
    async def reset(request: web.Request) -> web.Response:
        controls.state(request).reset()
        return json_response({"ok": True})

    async def get_config(request: web.Request) -> web.Response:
        return json_response(controls.config(controls.state(request)))

    async def update_config(request: web.Request) -> web.Response:
        state = controls.state(request)
        controls.configure(state, await read_object(request))
        return json_response(controls.config(state))

    async def add_fault(request: web.Request) -> web.Response:
        state = controls.state(request)
        target, fault = controls.parse_fault(state, await read_object(request))
        state.faults.add(target, fault)
        return json_response({"faults_pending": state.faults.pending()})

    async def clear_faults(request: web.Request) -> web.Response:
        controls.state(request).faults.clear()
        return json_response({"faults_pending": 0})

    async def get_stats(request: web.Request) -> web.Response:
        return json_response(controls.stats(controls.state(request)))

    async def reset_stats(request: web.Request) -> web.Response:
        state = controls.state(request)
        controls.reset_stats(state)
        return json_response(controls.stats(state))

    app.router.add_post("/_sim/reset", reset)
    app.router.add_get("/_sim/config", get_config)
    app.router.add_post("/_sim/config", update_config)
    app.router.add_post("/_sim/faults", add_fault)
    app.router.add_delete("/_sim/faults", clear_faults)
    app.router.add_get("/_sim/stats", get_stats)
    app.router.add_post("/_sim/stats/reset", reset_stats)
