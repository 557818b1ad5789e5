"""The relay's flows on a worker's parts: the destinations built from the settings (each
only where its relay is configured, its rate limit shared through Redis), one subject's
delivery and the sweep's selection."""

from __future__ import annotations

from worker.base.ratelimit import SharedRateLimiter
from worker.flows.parts import Parts
from worker.flows.relays.deliver import SubjectRun, deliver_subject
from worker.flows.relays.destinations import ATREEMO, CONTLO, Atreemo, Contlo, Destination
from worker.flows.relays.sweep import lost_subjects
from worker.store.relays import Relays
from worker.systems.atreemo.client import AtreemoClient
from worker.systems.contlo.client import ContloClient

ATREEMO_RATE_KEY = "pointsync:ratelimit:atreemo"
CONTLO_RATE_KEY = "pointsync:ratelimit:contlo"

# The destinations of the process's current parts (rebuilt when the parts are: their
# clients belong to the parts' event loop).
_built: tuple[Parts, dict[str, Destination]] | None = None


def destinations_for(parts: Parts) -> dict[str, Destination]:
    global _built
    if _built is not None and _built[0] is parts:
        return _built[1]
    settings = parts.settings
    found: dict[str, Destination] = {}
    if settings.toggle_relay_enabled:
        limiter = SharedRateLimiter(parts.redis, ATREEMO_RATE_KEY, settings.ATREEMO_RATE_LIMIT)
        found[ATREEMO] = Atreemo(AtreemoClient(settings, limiter), settings.ATREEMO_SENDS_EMAILS)
    if settings.nector_relay_enabled:
        limiter = SharedRateLimiter(parts.redis, CONTLO_RATE_KEY, settings.CONTLO_RATE_LIMIT)
        found[CONTLO] = Contlo(ContloClient(settings, limiter), settings.CONTLO_EVENT_NAMES)
    _built = (parts, found)
    return found


async def relay_subject(parts: Parts, source: str, subject: str) -> SubjectRun:
    return await deliver_subject(Relays(parts.store), destinations_for(parts), source, subject,
                                 max_age_seconds=parts.settings.RELAY_MAX_AGE_SECONDS)


def subjects_to_sweep(parts: Parts) -> list[tuple[str, str]]:
    return lost_subjects(Relays(parts.store))
