"""The runtime the tasks run on, loaded by the pool child that runs the first of them.

The worker's main process imports the task modules to register the tasks' names and
signatures, and forks its pool children from that state, but never runs a task itself. So
the task modules import the flows, the store and the clients (SQLAlchemy, httpx,
redis.asyncio, msgspec: about 20 MB) inside the task bodies, through this module: neither
the main process nor a pool child that stays idle carries them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import cache
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from worker.flows.parts import Parts

T = TypeVar("T")


def run_with_parts(work: Callable[[Parts], Awaitable[T]]) -> T:
    """runtime.run_with_parts, loading the runtime on first use."""
    from worker.faces import runtime

    _count_toggle_outcomes()
    return runtime.run_with_parts(work)


@cache
def _count_toggle_outcomes() -> None:
    """Toggle's answers by outcome reach /metrics with the response counts: registered once
    the runtime is loaded (before, no Toggle request can have been made)."""
    from worker.base import telemetry
    from worker.systems.toggle import session

    telemetry.count_outcomes("toggle", session.OUTCOMES)
