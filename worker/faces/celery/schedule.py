"""Every periodic task, in one place (read by celery beat through redbeat; the scheduler
itself is in beat.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.faces.celery.settings_apart import CeleryInputs


def beat_schedule(settings: CeleryInputs) -> dict[str, Any]:
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
