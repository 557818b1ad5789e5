"""Runs the simulated APIs (Treazure, Engage, Toggle, Atreemo, Contlo) in one process, each
on its own port, and announces where they listen."""

import asyncio
import json
import signal
from collections.abc import Callable
from typing import Any

from aiohttp import web

from sims import control, engage, treazure
from sims.config import SimConfig
from sims.endpoint import control_errors
from sims.relays.atreemo import atreemo_app, atreemo_state
from sims.relays.contlo import contlo_app, contlo_state
from sims.seed import plan_from_json, seed
from sims.state import STATE, SimState
from sims.toggle.server import toggle_app, toggle_state

_MAX_BODY = 64 * 1024 * 1024  # aiohttp's 1 MiB default is too small for bulk /_sim/ calls


def run(
    host: str,
    treazure_port: int,
    engage_port: int,
    seed_contacts: int = 0,
    seed_changed: int | None = None,
    toggle_port: int = 0,
    atreemo_port: int = 0,
    contlo_port: int = 0,
    **config: Any,
) -> None:
    """Serve until SIGTERM or SIGINT. Port 0 lets the OS pick a free port.

    `config` holds SimConfig settings (client_id, api_key, engage_rate_limit, ...); they are
    also what `/_sim/reset` goes back to. Once every port listens (after seeding), prints one
    JSON line to stdout: {"treazure": "http://host:port", "engage": "http://host:port",
    "toggle": "http://host:port", "atreemo": …, "contlo": …} (Toggle's GraphQL endpoint is
    that URL plus /graphql; Atreemo's ingestion URL that URL plus /ingest/toggle).
    """
    state = SimState(SimConfig().updated(config))
    if seed_contacts:
        plan = {"contacts": seed_contacts}
        if seed_changed is not None:
            plan["changed"] = seed_changed
        seed(state, plan_from_json(plan))
    asyncio.run(_serve(state, host, treazure_port, engage_port, toggle_port,
                       atreemo_port, contlo_port))


def _build_app(
    state: SimState, add_api_routes: Callable[[web.Application], None]
) -> web.Application:
    app = web.Application(middlewares=[control_errors], client_max_size=_MAX_BODY)
    app[STATE] = state
    add_api_routes(app)
    control.add_routes(app)
    return app


async def _serve(
    state: SimState, host: str, treazure_port: int, engage_port: int, toggle_port: int = 0,
    atreemo_port: int = 0, contlo_port: int = 0,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    urls: dict[str, str] = {}
    runners: list[web.AppRunner] = []
    try:
        for name, add_routes, port in (
            ("treazure", treazure.add_routes, treazure_port),
            ("engage", engage.add_routes, engage_port),
        ):
            # No access log: a line per request is CPU the benchmark would pay for nothing.
            runner = web.AppRunner(
                _build_app(state, add_routes), access_log=None, shutdown_timeout=1
            )
            runners.append(runner)
            await runner.setup()
            await web.TCPSite(runner, host, port).start()
            urls[name] = _url(host, runner.addresses[0][1])
        # Toggle keeps its own books and control API (sims/toggle) on its own port.
        runner = web.AppRunner(toggle_app(toggle_state()), access_log=None, shutdown_timeout=1)
        runners.append(runner)
        await runner.setup()
        await web.TCPSite(runner, host, toggle_port).start()
        urls["toggle"] = _url(host, runner.addresses[0][1])
        # The relay destinations (sims/relays), each on its own port with its own books.
        for name, app, port in (("atreemo", atreemo_app(atreemo_state()), atreemo_port),
                                ("contlo", contlo_app(contlo_state()), contlo_port)):
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
            runners.append(runner)
            await runner.setup()
            await web.TCPSite(runner, host, port).start()
            urls[name] = _url(host, runner.addresses[0][1])
        print(json.dumps(urls), flush=True)
        await stop.wait()
    finally:
        for runner in runners:
            await runner.cleanup()


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
