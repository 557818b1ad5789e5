"""The scheduler that keeps celery beat running through a Redis outage. Apart from the
schedule (schedule.py) because redbeat brings tenacity, tornado and curses (about 2 MB),
which only beat needs: the worker builds the same app and never loads this module."""

from __future__ import annotations

import logging
from typing import Any

from redbeat import RedBeatScheduler
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger("pointsync.beat")

# While Redis does not answer, beat tries its next tick this often.
OUTAGE_RETRY_SECONDS = 1.0


class OutageTolerantScheduler(RedBeatScheduler):
    """redbeat's scheduler, riding out a Redis outage instead of exiting on it.

    A tick that cannot reach Redis (lock renewal, due entries) is tried again a moment
    later. The beat lock keeps its TTL (`redbeat_lock_timeout`) through the outage, so after
    a short one the renewal finds it still ours; after a longer one, or on a Redis that
    lost its data, the lock is no longer ours and redbeat's LockNotOwnedError ends beat as
    before, for its supervisor to restart (it then waits for the lock like any second beat).
    """

    def tick(self, *args: Any, **kwargs: Any) -> float:
        try:
            return float(super().tick(*args, **kwargs))
        except (RedisConnectionError, RedisTimeoutError) as exc:
            log.warning("beat: Redis unavailable (%s); trying again in %g s",
                        " ".join(str(exc).split())[:200], OUTAGE_RETRY_SECONDS)
            return OUTAGE_RETRY_SECONDS
