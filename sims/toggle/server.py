"""The Toggle simulator's aiohttp application, and running it alone on one port."""

import asyncio
import json
import signal
from typing import Any

from aiohttp import web

from sims.endpoint import control_errors
from sims.toggle import control
from sims.toggle.config import ToggleConfig
from sims.toggle.endpoint import TOGGLE, graphql_endpoint
from sims.toggle.state import ToggleState

PATH = "/graphql"  # TOGGLE_API_URL is the simulator's URL plus this path


def toggle_app(state: ToggleState) -> web.Application:
    app = web.Application(middlewares=[control_errors])
    app[TOGGLE] = state
    app.router.add_post(PATH, graphql_endpoint)
    control.add_routes(app)
    return app


def toggle_state(**config: Any) -> ToggleState:
    return ToggleState(ToggleConfig().updated(config))


def run(host: str, port: int, **config: Any) -> None:
    """Serve until SIGTERM or SIGINT; prints {"toggle": "http://host:port"} once listening."""
    asyncio.run(_serve(toggle_state(**config), host, port))


async def _serve(state: ToggleState, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner = web.AppRunner(toggle_app(state), access_log=None, shutdown_timeout=1)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound = runner.addresses[0][1]
        url = f"http://[{host}]:{bound}" if ":" in host else f"http://{host}:{bound}"
        print(json.dumps({"toggle": url}), flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()
