"""Runs a flow from a command, in this process, with the worker's own clients and store."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from worker.base.settings import get_settings
from worker.faces.runtime import prepare_store, remote
from worker.flows.parts import Parts

T = TypeVar("T")


def run_remote(work: Callable[[Parts], Awaitable[T]]) -> T:
    """Run `work` with the worker's own clients, store and Redis, in this process."""
    settings = get_settings()  # a missing setting stops here, before anything is sent
    prepare_store(settings.DATABASE_URL)

    async def main() -> T:
        async with remote(settings) as parts:
            return await work(parts)

    return asyncio.run(main())
