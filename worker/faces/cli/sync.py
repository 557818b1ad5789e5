"""`pointsync status` and `pointsync sync`: what the sync has done, and one more run."""

from __future__ import annotations

import contextlib
import json
import time
from typing import TYPE_CHECKING, Annotated, Any

import redis
import typer

from worker.base.arguments import InvalidArgument
from worker.base.settings import get_core_settings
from worker.faces.celery.queues import queue_depths, unacked_count
from worker.faces.cli.ledger_rows import point_json, points_table
from worker.faces.cli.output import age_text, console, err_console, jsonable, progress_bar
from worker.faces.cli.runs import counts_text, run_summary, runs_table
from worker.faces.runtime import prepare_store
from worker.flows.sync.summary import Counts
from worker.flows.sync.window import parse_time_argument
from worker.store.database import Store
from worker.store.engine import utcnow
from worker.store.ledger import Ledger
from worker.store.runs import RUN_COUNTS

if TYPE_CHECKING:
    from celery.result import AsyncResult

FAILED_SHOWN = 5


def _lag_text(seconds: float | None) -> str:
    return "no scheduled sync has succeeded yet" if seconds is None else age_text(seconds)


def _queue_state(redis_url: str) -> dict[str, Any]:
    """Waiting messages per queue and those handed to workers, or why they are unknown."""
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=3, socket_timeout=3)
    try:
        return {"waiting": queue_depths(client), "unacked": unacked_count(client)}
    except redis.RedisError as exc:
        return {"error": f"Redis does not answer: {type(exc).__name__}"}
    finally:
        client.close()


def status(
    limit: Annotated[int, typer.Option(help="How many recent runs to show.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Recent sync runs, the lag (age of the watermark), point transactions by state and
    the failed ones, and the Celery queue depths."""
    settings = get_core_settings()
    store = prepare_store(settings.DATABASE_URL)
    runs = store.recent_runs(limit)
    watermark = store.watermark()
    lag = None if watermark is None else round((utcnow() - watermark).total_seconds(), 1)
    ledger = Ledger(store)
    states = {state: 0 for state in ("received", "booked", "applied", "failed")}
    states.update(ledger.counts_by_state())
    failed = ledger.listing("failed", FAILED_SHOWN) if states["failed"] else []
    queues = _queue_state(settings.REDIS_URL)
    if as_json:
        print(json.dumps({
            "watermark": jsonable(watermark), "lag_seconds": lag,
            "runs": [{k: jsonable(v) for k, v in r.items()} for r in runs],
            "point_transactions": states,
            "failed_transactions": [point_json(r) for r in failed],
            "queues": queues}))
        return
    console.print(f"lag: {_lag_text(lag)}"
                  + (f" (watermark {watermark:%Y-%m-%d %H:%M:%SZ})" if watermark else ""),
                  highlight=False)
    console.print(runs_table(runs))
    console.print("point transactions: " + ", ".join(f"{k} {v:,}" for k, v in states.items()),
                  highlight=False)
    if failed:
        console.print(points_table(failed, f"latest failed transactions ({states['failed']:,} "
                                   "in all; pointsync points failed)",
                                   ("reference", "contact_id", "amount", "updated_at",
                                    "reason")))
    if "error" in queues:
        console.print(f"queues: {queues['error']}", highlight=False)
    else:
        waiting = ", ".join(f"{name} {depth:,}" for name, depth in queues["waiting"].items())
        console.print(f"queues: waiting {waiting}; handed to workers {queues['unacked']:,}",
                      highlight=False)


def _follow_run(result: AsyncResult, store: Store, timeout: float | None) -> Any:
    """A live progress bar fed by the run's row (updated every ~2 s by the worker) until
    the task has finished; returns the task's result (or the exception it raised)."""
    # Local, like the app in `sync`: Celery (~0.1 s to import) only for the commands that send.
    from celery.exceptions import TimeoutError as CeleryTimeout

    deadline = None if timeout is None else time.monotonic() + timeout
    with progress_bar() as bar:
        task = bar.add_task("waiting for a worker", total=None, counts="")

        def show(run: dict[str, Any] | None) -> None:
            if run is not None:
                bar.update(task, description=f"sync run {run['id']} {run['status']}",
                           counts=counts_text(Counts(**{k: run[k] for k in RUN_COUNTS})))

        while not result.ready():
            if deadline is not None and time.monotonic() > deadline:
                raise typer.Exit(2)
            show(store.run_for_task(result.id))
            # Returns as soon as the task ends; else the bar is refreshed every 0.5 s.
            with contextlib.suppress(CeleryTimeout):
                result.get(timeout=0.5, propagate=False)
        show(store.run_for_task(result.id))
    return result.get(propagate=False)


def sync(
    since: Annotated[str | None, typer.Option(help="Window start, ISO-8601 with timezone.")] = None,
    until: Annotated[str | None, typer.Option(help="Window end, ISO-8601 with timezone.")] = None,
    wait: Annotated[bool, typer.Option(
        help="Follow the run with a live progress bar and print its summary.")] = False,
    timeout: Annotated[float | None, typer.Option(
        help="With --wait: give up waiting after this many seconds (exit 2).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Enqueue one balance sync run (pointsync.sync_balances)."""
    try:
        parse_time_argument("since", since)
        parse_time_argument("until", until)
    except InvalidArgument as exc:
        raise typer.BadParameter(str(exc)) from None
    # Local: building the Celery app reads the settings (and importing Celery costs ~0.1 s);
    # only the commands that send need it.
    from worker.faces.celery.app import app

    kwargs = {k: v for k, v in {"since": since, "until": until}.items() if v}
    result = app.send_task("pointsync.sync_balances", kwargs=kwargs)
    if not wait:
        print(json.dumps({"task_id": result.id}) if as_json else f"enqueued task {result.id}")
        return
    store = prepare_store(get_core_settings().DATABASE_URL)
    try:
        summary = _follow_run(result, store, timeout)
    except typer.Exit:
        err_console.print(f"still running after {timeout:g} s (task {result.id}); "
                          "pointsync status shows it")
        raise
    if as_json:
        print(json.dumps(summary if isinstance(summary, dict) else {"error": str(summary)}))
    elif isinstance(summary, dict):
        console.print(run_summary({**summary, "id": summary.get("run_id")}))
    else:
        console.print(f"[red]sync failed:[/red] {summary}")
    if not isinstance(summary, dict) or summary.get("status") not in ("succeeded",):
        raise typer.Exit(1)
