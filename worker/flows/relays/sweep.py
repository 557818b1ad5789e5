"""The relay's safety net and the operator's replay.

`lost_subjects` finds the subjects with a delivery whose task was lost (recorded but never
taken up, a retry that came due, a lease whose worker died); each is handed to
`deliver_subject` again (the task queues one per subject, `sweep` runs them here).
`replay` puts a failed delivery back in `received`, its attempts counted afresh.
"""

from __future__ import annotations

from collections.abc import Mapping

from worker.flows.relays.deliver import SubjectRun, deliver_subject
from worker.flows.relays.destinations import Destination
from worker.store.relays import DeliveryRow, Relays

# A recorded delivery untouched this long had its task lost (a live one is taken at once).
STALE_SECONDS = 60.0
SWEEP_LIMIT = 1000


def lost_subjects(relays: Relays, stale_seconds: float = STALE_SECONDS,
                  limit: int = SWEEP_LIMIT) -> list[tuple[str, str]]:
    return relays.lost_subjects(stale_seconds, limit)


async def sweep(
    relays: Relays, destinations: Mapping[str, Destination], *, max_age_seconds: float,
    stale_seconds: float = STALE_SECONDS, limit: int = SWEEP_LIMIT,
) -> list[SubjectRun]:
    """Deliver every subject with a lost or due delivery, one after the other."""
    return [await deliver_subject(relays, destinations, source, subject,
                                  max_age_seconds=max_age_seconds)
            for source, subject in lost_subjects(relays, stale_seconds, limit)]


def replay(relays: Relays, key: str) -> DeliveryRow | None:
    """A failed delivery back to `received` (None: no such delivery; a delivery that is not
    failed is returned unchanged). The caller queues its subject."""
    return relays.replay(key)
