"""Thin tasks: parse arguments, call a flow, return a small JSON-serialisable summary."""

from __future__ import annotations

import asyncio
from typing import Any

from worker import points
from worker.celery import app
from worker.ledger import LedgerRow
from worker.point_request import SOURCES, validate_request
from worker.runtime import remote, run_with_parts
from worker.sync import run_sync


class SyncFailed(Exception):
    """The run was recorded as failed; the watermark did not move."""


@app.task(name="pointsync.sync_balances", bind=True)
def sync_balances(self: Any, since: str | None = None, until: str | None = None) -> dict[str, Any]:
    """One balance sync run; `since`/`until` (ISO times) override the window."""

    async def main() -> dict[str, Any]:
        async with remote() as r:
            summary = await run_sync(
                r.settings, r.store, r.redis, r.treazure, r.engage,
                since=since, until=until, task_id=self.request.id, guard=r.guard,
            )
        return summary.as_dict()

    result = asyncio.run(main())
    if result["status"] == "failed":
        # Shown as FAILURE in Flower and `celery result`; the run row keeps the details.
        raise SyncFailed(f"sync run {result['run_id']} failed: {result['error']}")
    return result


@app.task(name="pointsync.add_points")
def add_points(
    contact_id: str,
    amount: str | int | float,
    description: str,
    reference: str | None = None,
    source: str = "task",
) -> dict[str, Any]:
    """Book points in Treazure once per `reference`, then set the new balance in Engage.

    Invalid arguments fail the task at once (nothing is recorded or sent). A transaction
    not finished here (Treazure down, say) stays in the ledger and the sweep finishes it.
    """
    request = validate_request(contact_id, amount, description, reference)
    origin = source if source in SOURCES else "task"
    outcome = run_with_parts(lambda parts: points.add_points(parts, request, origin))
    return outcome.as_dict()


@app.task(name="pointsync.sweep_points")
def sweep_points() -> dict[str, int]:
    """Finish transactions whose task was lost, and push balances still waiting for Engage."""
    return run_with_parts(lambda parts: points.sweep(parts, enqueue_row))


def enqueue_row(row: LedgerRow) -> None:
    add_points.apply_async(kwargs=task_arguments(row))


def task_arguments(row: LedgerRow) -> dict[str, Any]:
    """The add_points arguments that continue a recorded transaction (no secrets in them)."""
    return {"contact_id": row.contact_id, "amount": points.decimal_text(row.amount_cents),
            "description": row.description, "reference": row.reference}
