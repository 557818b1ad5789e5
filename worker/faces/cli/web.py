"""`pointsync web`: the web process, started from the CLI."""

from __future__ import annotations


def web() -> None:
    """Run the web process: Engage's webhook receiver, the points-history endpoint and
    /health (PORT, WEB_HOST)."""
    # Local: the web process's module loads aiohttp (~0.6 s), which no other command needs.
    from worker.faces.web.app import main as web_main

    web_main()
