"""Every periodic task, in one place (read by celery beat through redbeat), and the
scheduler that keeps beat running through a Redis outage."""

from __future__ import annotations

import logging
from typing import Any

from redbeat import RedBeatScheduler
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from worker.base.settings import CoreSettings

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


def beat_schedule(settings: CoreSettings) -> dict[str, Any]:
    return {
        "sync-balances": {
            "task": "pointsync.sync_balances",
            "schedule": float(settings.SYNC_INTERVAL_SECONDS),
            # A run that could not start within one period is superseded by the next.
            "options": {"expires": float(settings.SYNC_INTERVAL_SECONDS)},
        },
        "purge-history": {
            "task": "pointsync.purge_history",
            "schedule": float(settings.HISTORY_PURGE_INTERVAL_SECONDS),
            "options": {"expires": float(settings.HISTORY_PURGE_INTERVAL_SECONDS)},
        },
        "sweep-points": {
            "task": "pointsync.sweep_points",
            "schedule": float(settings.POINTS_SWEEP_INTERVAL_SECONDS),
            "options": {"expires": float(settings.POINTS_SWEEP_INTERVAL_SECONDS)},
        },
        # Gift-card rows whose task was lost (nothing to do where Toggle is not configured).
        "sweep-giftcards": {
            "task": "pointsync.sweep_giftcards",
            "schedule": float(settings.POINTS_SWEEP_INTERVAL_SECONDS),
            "options": {"expires": float(settings.POINTS_SWEEP_INTERVAL_SECONDS)},
        },
        # Relay deliveries whose task was lost or whose retry came due (none: nothing to do).
        "sweep-relays": {
            "task": "pointsync.sweep_relays",
            "schedule": float(settings.POINTS_SWEEP_INTERVAL_SECONDS),
            "options": {"expires": float(settings.POINTS_SWEEP_INTERVAL_SECONDS)},
        },
    }
