"""Moves this process's response tally (worker/http.py) into Redis, where the web process
reads it for /metrics: every worker process adds its counts to one shared hash.

A flush takes what the tally holds, HINCRBYs it in one MULTI/EXEC, and only then is it
gone from the tally: a failed flush puts it back, so nothing is lost. (Only a flush that
breaks or is cancelled after Redis applied the EXEC, before its answer came back, counts a
batch twice; counters that run slightly high are the lesser evil.)

When: every FLUSH_INTERVAL while a task runs, when a process's clients close (the end of a
sync task), and at the end of a short task at most once a TASK_FLUSH_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from typing import TypeVar

from redis import Redis as SyncRedis
from redis.asyncio import Redis

from worker.base.http import RESPONSES

log = logging.getLogger("pointsync.telemetry")

RESPONSES_KEY = "pointsync:metrics:responses"
# A system's answers by outcome (Toggle's session.OUTCOMES: ok, refused, throttled, …),
# flushed with the responses into a hash of their own: `toggle:refused`.
OUTCOMES_KEY = "pointsync:metrics:outcomes"
_outcome_tallies: dict[str, Counter[str]] = {}
FLUSH_INTERVAL = 5.0  # seconds between flushes while a long task (a sync) runs
FLUSH_TIMEOUT = 2.0  # a flush gives up after this, keeping its counts for the next one
# Short tasks flush at their end at most this often: at 50 point transactions a second a
# flush per task would be ~2 % of a worker's CPU (a Redis round trip each).
TASK_FLUSH_SECONDS = 1.0

_last_flush = float("-inf")  # time.monotonic() of this process's last flush attempt

Tally = Counter[tuple[str, str]]
K = TypeVar("K")


def field(service: str, status: str) -> str:
    """The hash field for one (service, status): `engage:429`."""
    return f"{service}:{status}"


def count_outcomes(service: str, outcomes: Counter[str]) -> None:
    """Flush `outcomes` (a system's own counter, which base cannot import) with the
    responses from now on; a face registers it (a second call replaces the first)."""
    _outcome_tallies[service] = outcomes


def take(tally: Counter[K]) -> dict[K, int]:
    """What the tally holds now, removed from it (increments made later stay)."""
    taken = {key: count for key, count in tally.items() if count}
    for key, count in taken.items():
        tally[key] -= count
        if not tally[key]:
            del tally[key]
    return taken


async def flush_responses(redis: Redis, tally: Tally = RESPONSES) -> int:
    """Add the tally (and the registered outcome counters) to the shared hashes; the
    number of responses moved. Raises (with the counts back in their tallies) when Redis
    cannot be written."""
    taken = take(tally)
    outcomes = {service: take(counter)
                for service, counter in _outcome_tallies.items()}
    if not taken and not any(outcomes.values()):
        return 0
    try:
        pipe = redis.pipeline(transaction=True)
        for (service, status), count in taken.items():
            pipe.hincrby(RESPONSES_KEY, field(service, status), count)
        for service, counts in outcomes.items():
            for outcome, count in counts.items():
                pipe.hincrby(OUTCOMES_KEY, field(service, str(outcome)), count)
        await pipe.execute()
    except BaseException:  # cancelled too: what was taken goes back
        tally.update(taken)
        for service, counts in outcomes.items():
            _outcome_tallies[service].update(counts)
        raise
    return sum(taken.values())


def task_flush_due(tally: Tally = RESPONSES) -> bool:
    """Whether a task ending now should flush: it has counts and the last flush is old."""
    pending = bool(tally) or any(_outcome_tallies.values())
    return pending and time.monotonic() - _last_flush >= TASK_FLUSH_SECONDS


async def try_flush(redis: Redis, tally: Tally = RESPONSES) -> None:
    """A flush that never fails its caller (a task's end, a client's close)."""
    global _last_flush
    _last_flush = time.monotonic()
    try:
        async with asyncio.timeout(FLUSH_TIMEOUT):
            await flush_responses(redis, tally)
    except Exception as exc:
        log.debug("response counts not flushed yet (%s); kept for the next flush",
                  type(exc).__name__)


class PeriodicFlush:
    """Flushes every FLUSH_INTERVAL beside a long task on its loop; `close()` stops it and
    flushes what is left.

    Stopped by an event, not by cancelling: a flush cancelled after Redis applied it is
    put back and counted twice. A cancel from outside (a loop being torn down) still ends
    it, even one that redis-py swallowed (it sends through asyncio.wait_for, which on 3.11
    can lose a cancel that lands as a send completes).
    """

    def __init__(self, redis: Redis, tally: Tally = RESPONSES) -> None:
        self._redis, self._tally = redis, tally
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        this = asyncio.current_task()
        while not self._stop.is_set() and not (this and this.cancelling()):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_INTERVAL):
                    await self._stop.wait()
            if not self._stop.is_set():
                await try_flush(self._redis, self._tally)

    async def close(self) -> None:
        self._stop.set()
        await asyncio.wait([self._task])  # a flush under way completes first
        await try_flush(self._redis, self._tally)


def read_responses(redis: SyncRedis, key: str = RESPONSES_KEY) -> dict[tuple[str, str], int]:
    """The shared totals since Redis was last emptied: {(service, status): count}
    (OUTCOMES_KEY: {(service, outcome): count})."""
    totals: dict[tuple[str, str], int] = {}
    for raw_field, raw_count in redis.hgetall(key).items():
        name = raw_field.decode() if isinstance(raw_field, bytes) else str(raw_field)
        service, _, status = name.partition(":")
        if status:
            totals[service, status] = int(raw_count)
    return totals
