"""Relay tasks: deliver one subject's due events (queued by the receivers, the sweep and
replay), and the sweep on beat that finds the subjects whose task was lost or whose retry
came due. Results are small summaries, never an event's body. Each body imports its flow
(lazy.py says why)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from worker.faces.celery.app import app
from worker.faces.celery.lazy import run_with_parts
from worker.faces.celery.tasks import NO_RESULT

# A subject due again this soon is queued again by its task; later ones are the sweep's.
REQUEUE_MAX_SECONDS = 60.0


@app.task(name="pointsync.relay_subject", **NO_RESULT)
def relay_subject(source: str, subject: str) -> dict[str, Any]:
    """Deliver `subject`'s due events of `source`, in the source's creation order."""
    from worker.flows.relays import run
    outcome = run_with_parts(lambda parts: run.relay_subject(parts, source, subject))
    retry_in = outcome.retry_in()
    countdown = 0.0 if outcome.more else retry_in
    if countdown is not None and countdown <= REQUEUE_MAX_SECONDS:
        relay_subject.apply_async(kwargs={"source": source, "subject": subject},
                                  countdown=countdown, **NO_RESULT)
    return {"source": source, "settled": dict(outcome.settled), "retry_in": retry_in,
            "busy": outcome.busy}


@app.task(name="pointsync.sweep_relays", **NO_RESULT)
def sweep_relays() -> dict[str, int]:
    """Queue every subject with a delivery whose task was lost or whose retry is due."""
    from worker.flows.relays import run

    async def work(parts: Any) -> list[tuple[str, str]]:
        return run.subjects_to_sweep(parts)

    subjects = run_with_parts(work)
    for source, subject in subjects:
        relay_subject.apply_async(kwargs={"source": source, "subject": subject}, **NO_RESULT)
    return {"subjects": len(subjects)}


def _moment(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@app.task(name="pointsync.backfill_toggle_orders", **NO_RESULT)
def backfill_toggle_orders(since: str, until: str | None = None) -> dict[str, Any]:
    """Record Toggle's orders created in [since, until] (ISO 8601) as `order.created` for
    Atreemo, each order once, and queue their delivery."""
    from worker.flows.relays import backfill
    outcome = run_with_parts(lambda parts: backfill.backfill_toggle_orders(
        parts, _moment(since), None if until is None else _moment(until)))
    for subject in outcome.subjects:
        relay_subject.apply_async(kwargs={"source": backfill.TOGGLE, "subject": subject},
                                  **NO_RESULT)
    return outcome.as_dict()
